"""MP-SENet's two-stage transformer block (the repository's ``models/transformer.py``), checkpoint-compatible.

Attention plus a bidirectional-GRU feed-forward, pre-norm, with the reference's attribute names
(``norm1``, ``attention``, ``ffn.gru``, ...; ``tests/golden/mpsenet_keys.txt`` pins them).

Faithfully reproduced quirk (do not "fix" it without retraining): the reference's
``TransformerBlock`` uses ``nn.MultiheadAttention`` and ``nn.GRU`` with their default
``batch_first=False`` on tensors laid out ``(batch * other_axis, seq_axis, C)``. So the "time"
transformer actually attends and recurs along the *first* axis -- batch x frequency -- and treats
frames as the batch; the "frequency" transformer runs along batch x frames. Two consequences
(upstream issues yxlu-0102/MP-SENet#21 and #64; its README recommends ``batch_first=True`` for a
retraining): with batch size 1 the stages operate over frequency, then time (the reverse of their
names), and with batch size > 1 **the items of a batch influence each other**. The released
weights were trained this way (batch 4 over the GPUs), so :class:`SequenceFirstTransformer` keeps
the axis convention; ``MPSENetGenerator.couples_batch_items`` tells the enhancer to run one item
per call, as the reference's ``inference.py`` does.

Deviation (numerically equivalent): the attention is called with ``need_weights=False``, so
``nn.MultiheadAttention`` takes its ``scaled_dot_product_attention`` path instead of
materialising the (large, head-averaged) attention matrix.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["TSTransformerBlock"]


class GRUFeedForward(nn.Module):
    """Bi-GRU (hidden ``2 * C``) -> LeakyReLU -> dropout -> Linear(4C, C); sequence-first input."""

    def __init__(self, d_model: int, bidirectional: bool = True, dropout: float = 0.0):
        super().__init__()
        self.gru = nn.GRU(d_model, d_model * 2, 1, bidirectional=bidirectional)
        self.linear = nn.Linear(d_model * 2 * (2 if bidirectional else 1), d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, _ = self.gru(x)
        return self.linear(self.dropout(F.leaky_relu(x)))


class SequenceFirstTransformer(nn.Module):
    """Pre-norm block: ``x + MHA(LN x)``, ``x + GRUFFN(LN x)``, then LayerNorm.

    The input is ``(L, N, C)`` with the **first** axis as the sequence (``batch_first=False``
    for both the attention and the GRU), exactly like the reference ``TransformerBlock`` --
    see the module docstring for what that means for MP-SENet's two-stage blocks.
    """

    def __init__(self, d_model: int, n_heads: int, bidirectional: bool = True, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.attention = nn.MultiheadAttention(d_model, n_heads, dropout=dropout)
        self.dropout1 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.ffn = GRUFeedForward(d_model, bidirectional=bidirectional)
        self.dropout2 = nn.Dropout(dropout)
        self.norm3 = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        h, _ = self.attention(h, h, h, need_weights=False)
        x = x + self.dropout1(h)
        x = x + self.dropout2(self.ffn(self.norm2(x)))
        return self.norm3(x)


class TSTransformerBlock(nn.Module):
    """Two-stage block on ``(B, C, T, F)``: a residual "time" then "frequency" transformer.

    The tensors are laid out ``(B*F, T, C)`` and ``(B*T, F, C)`` as in the reference; because
    the transformers are sequence-first, the sequences are actually the B*F and B*T axes.
    """

    def __init__(self, channels: int = 64, n_heads: int = 4):
        super().__init__()
        self.time_transformer = SequenceFirstTransformer(d_model=channels, n_heads=n_heads)
        self.freq_transformer = SequenceFirstTransformer(d_model=channels, n_heads=n_heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, f = x.shape
        x = x.permute(0, 3, 2, 1).reshape(b * f, t, c)
        x = self.time_transformer(x) + x
        x = x.reshape(b, f, t, c).transpose(1, 2).reshape(b * t, f, c)
        x = self.freq_transformer(x) + x
        return x.reshape(b, t, f, c).permute(0, 3, 1, 2)
