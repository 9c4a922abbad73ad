"""The conformer of CMGAN's two-stage blocks (Gulati et al. 2020, as used by CMGAN's ``src/models/conformer.py``).

Macaron feed-forwards, relative-position self-attention (Shaw et al.), a depthwise-convolution
module and a final LayerNorm. Attribute names and nesting (``ff1.fn.fn.net.0``, ``attn.fn.to_q``,
``conv.net.5``, ...) are the official checkpoint's keys: do not rename them
(``tests/golden/cmgan_keys.txt`` pins the list). Our code (the reference's ``einops`` rearranges
are plain ``permute``/``reshape``; GLU/Swish are ``nn.GLU``/``nn.SiLU``), numerically equal to the
reference (``benchmarks/check_reference_equivalence.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ConformerBlock", "TwoStageConformer"]


class _Scale(nn.Module):
    """``fn(x) * scale`` (the half-step of the macaron feed-forward). Child name ``fn`` is fixed."""

    def __init__(self, scale: float, fn: nn.Module):
        super().__init__()
        self.scale = scale
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x) * self.scale


class _PreNorm(nn.Module):
    """``fn(LayerNorm(x))``. Child names ``norm`` and ``fn`` are fixed by the checkpoint."""

    def __init__(self, dim: int, fn: nn.Module):
        super().__init__()
        self.fn = fn  # registered before ``norm``: the checkpoint's key order
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self.norm(x))


class FeedForward(nn.Module):
    """Linear(dim, mult*dim) -> Swish -> dropout -> Linear(mult*dim, dim) -> dropout."""

    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, dim * mult), nn.SiLU(), nn.Dropout(dropout),
                                 nn.Linear(dim * mult, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class RelPosSelfAttention(nn.Module):
    """Multi-head self-attention with Shaw-style learned relative-position embeddings.

    The logit of query ``i`` and key ``j`` in a head is ``(q_i . k_j + q_i . e_{i-j}) / sqrt(d)``
    with ``e`` a learned table indexed by the distance ``i - j`` clipped to
    ``[-max_pos_emb, max_pos_emb]``. Dropout applies to the output projection only.
    Input and output: ``(batch, seq, dim)``.
    """

    def __init__(self, dim: int, heads: int = 8, dim_head: int = 64, dropout: float = 0.0,
                 max_pos_emb: int = 512):
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.dim_head = dim_head
        self.max_pos_emb = max_pos_emb
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, dim)
        self.rel_pos_emb = nn.Embedding(2 * max_pos_emb + 1, dim_head)
        self.dropout = nn.Dropout(dropout)

    def _split_heads(self, t: torch.Tensor) -> torch.Tensor:
        b, n, _ = t.shape
        return t.reshape(b, n, self.heads, self.dim_head).transpose(1, 2)  # (B, H, N, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        k, v = self.to_kv(x).chunk(2, dim=-1)
        q, k, v = self._split_heads(self.to_q(x)), self._split_heads(k), self._split_heads(v)
        scale = self.dim_head**-0.5

        pos = torch.arange(n, device=x.device)
        distance = (pos[:, None] - pos[None, :]).clamp(-self.max_pos_emb, self.max_pos_emb) + self.max_pos_emb
        rel = self.rel_pos_emb(distance).to(q.dtype)  # (N, N, D)
        # Positional logits: pos[b, h, i, j] = q[b, h, i] . rel[i, j]
        pos_logits = torch.einsum("bhid,ijd->bhij", q, rel)

        logits = torch.matmul(q, k.transpose(-1, -2)) * scale + pos_logits * scale
        out = torch.matmul(logits.softmax(dim=-1), v)  # (B, H, N, D)
        out = out.transpose(1, 2).reshape(b, n, self.heads * self.dim_head)
        return self.dropout(self.to_out(out))


class _SwapLastAxes(nn.Module):
    """(B, N, C) <-> (B, C, N)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2)


class _DepthwiseConv1d(nn.Module):
    """Depthwise 1-D convolution with explicit (left, right) zero padding; child ``conv``."""

    def __init__(self, channels: int, kernel_size: int, padding: tuple[int, int]):
        super().__init__()
        self.padding = padding
        self.conv = nn.Conv1d(channels, channels, kernel_size, groups=channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, self.padding))


class ConvModule(nn.Module):
    """Conformer convolution module on ``(B, N, C)``.

    LayerNorm -> pointwise conv to ``2 * expansion * C`` -> GLU -> depthwise conv ("same"
    padding) -> BatchNorm -> Swish -> pointwise conv back to ``C`` -> dropout. The indices
    inside ``net`` (0 LayerNorm, 2 and 7 pointwise convs, 4 depthwise, 5 BatchNorm) are part of
    the checkpoint's key names.
    """

    def __init__(self, dim: int, expansion: int = 2, kernel_size: int = 31, dropout: float = 0.0):
        super().__init__()
        inner = dim * expansion
        same = (kernel_size // 2, kernel_size // 2 - (kernel_size + 1) % 2)
        self.net = nn.Sequential(
            nn.LayerNorm(dim),                                         # 0
            _SwapLastAxes(),                                           # 1: (B, C, N)
            nn.Conv1d(dim, 2 * inner, 1),                              # 2
            nn.GLU(dim=1),                                             # 3
            _DepthwiseConv1d(inner, kernel_size, same),                # 4
            nn.BatchNorm1d(inner),                                     # 5
            nn.SiLU(),                                                 # 6
            nn.Conv1d(inner, dim, 1),                                  # 7
            _SwapLastAxes(),                                           # 8: (B, N, C)
            nn.Dropout(dropout),                                       # 9
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ConformerBlock(nn.Module):
    """``x + ff1/2``, ``+ attention``, ``+ conv``, ``+ ff2/2``, then LayerNorm; on ``(B, N, C)``."""

    def __init__(self, dim: int, dim_head: int = 64, heads: int = 8, ff_mult: int = 4,
                 conv_expansion: int = 2, conv_kernel_size: int = 31, attn_dropout: float = 0.0,
                 ff_dropout: float = 0.0, conv_dropout: float = 0.0):
        super().__init__()
        self.ff1 = _Scale(0.5, _PreNorm(dim, FeedForward(dim, ff_mult, ff_dropout)))
        self.attn = _PreNorm(dim, RelPosSelfAttention(dim, heads=heads, dim_head=dim_head, dropout=attn_dropout))
        self.conv = ConvModule(dim, conv_expansion, conv_kernel_size, conv_dropout)
        self.ff2 = _Scale(0.5, _PreNorm(dim, FeedForward(dim, ff_mult, ff_dropout)))
        self.post_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ff1(x)
        x = x + self.attn(x)
        x = x + self.conv(x)
        x = x + self.ff2(x)
        return self.post_norm(x)


class TwoStageConformer(nn.Module):
    """CMGAN's TSCB: a residual conformer across time, then one across frequency.

    ``(B, C, T, F)`` -> same shape. The time stage treats every (batch, frequency) pair as a
    sequence of ``T`` frames; the frequency stage every (batch, frame) pair as a sequence of
    ``F`` bins.
    """

    def __init__(self, channels: int = 64, dropout: float = 0.2):
        super().__init__()

        def conformer() -> ConformerBlock:
            return ConformerBlock(dim=channels, dim_head=channels // 4, heads=4, conv_kernel_size=31,
                                  attn_dropout=dropout, ff_dropout=dropout)

        self.time_conformer = conformer()
        self.freq_conformer = conformer()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, f = x.shape
        x = x.permute(0, 3, 2, 1).reshape(b * f, t, c)
        x = self.time_conformer(x) + x
        x = x.reshape(b, f, t, c).transpose(1, 2).reshape(b * t, f, c)
        x = self.freq_conformer(x) + x
        return x.reshape(b, t, f, c).permute(0, 3, 1, 2)
