"""A frozen EnCodec 24 kHz front-end for the creative agent, from Meta's reference implementation.

The network is the ``encodec`` package's own ``EncodecModel.encodec_model_24khz`` (an optional
dependency: ``pip install encodec``), built without a download (compute nodes have no internet)
and loaded from a local copy of the official ``encodec_24khz-d7cc33bc.th`` state dict as it is.
At 6 kbps its residual quantizer uses the first 8 codebooks (8 x 10 bits x 75 frames/s).

Everything is frozen (``requires_grad=False``; the weight norm folded once at load time);
gradients still flow *through* the decoder to whatever is mixed in latent space.
"""

from __future__ import annotations

import hashlib
import re
import warnings
from pathlib import Path

import torch
from torch import nn

from trainer.core.config import ConfigError

__all__ = ["FrozenEncodec", "load_encodec", "write_random_encodec_weights", "SAMPLE_RATE"]

SAMPLE_RATE = 24000
HOP_LENGTH = 320  # 24000 / 75 frames per second


def _encodec_model() -> nn.Module:
    """A fresh, randomly initialised 24 kHz EnCodec from the package (no download)."""
    try:
        from encodec import EncodecModel
    except ImportError:
        raise ConfigError("model.front_end: encodec needs Meta's encodec package, which is not installed; "
                          "run .venv/bin/pip install encodec (or use front_end: stft)") from None
    with warnings.catch_warnings():  # the package still uses the deprecated torch.nn.utils.weight_norm
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*weight_norm.*")
        warnings.filterwarnings("ignore", category=UserWarning, message=".*weight_norm.*")
        return EncodecModel.encodec_model_24khz(pretrained=False)


class FrozenEncodec(nn.Module):
    """Encoder + residual VQ + decoder of one EnCodec model; ``encode`` (B, T) -> quantized latents
    (B, 128, N), ``decode`` (B, 128, N) -> (B, T)."""

    hop_length = HOP_LENGTH

    def __init__(self, model: nn.Module, bandwidth_kbps: float):
        super().__init__()
        self.model = model
        self.bandwidth_kbps = bandwidth_kbps
        self.dimension = model.quantizer.dimension

    @torch.no_grad()
    def encode(self, wave: torch.Tensor) -> torch.Tensor:
        """Quantized latents (B, dimension, ceil(T / 320)); no gradient (the encoder is frozen).
        Runs in fp32 even under autocast, so the codes do not depend on the AMP setting."""
        with torch.autocast(wave.device.type, enabled=False):
            latent = self.model.encoder(wave.float().unsqueeze(1))
            codes = self.model.quantizer.encode(latent, self.model.frame_rate, self.bandwidth_kbps)
            return self.model.quantizer.decode(codes)

    def decode(self, latent: torch.Tensor, length: int) -> torch.Tensor:
        with torch.autocast(latent.device.type, enabled=False):
            return self.model.decoder(latent.float())[:, 0, :length]


def _check_published_hash(path: Path) -> None:
    """Official files are named ``<name>-<first 8 hex digits of their sha256>.th``: check a copy."""
    match = re.fullmatch(r"encodec_24khz-([0-9a-f]{8})\.th", path.name)
    if match is None:
        return
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    if not digest.hexdigest().startswith(match.group(1)):
        raise ConfigError(f"model.encodec_weights: {str(path)!r} has sha256 {digest.hexdigest()[:8]}..., its "
                          f"name promises {match.group(1)}: the copy is damaged; stage it again")


def _fold_weight_norm(model: nn.Module) -> None:
    """Replace every weight-norm (g, v) pair by its product: the frozen network computes the same."""
    for module in model.modules():
        if hasattr(module, "weight_g") and hasattr(module, "weight_v"):
            torch.nn.utils.remove_weight_norm(module)


def load_encodec(path: str | Path, bandwidth_kbps: float = 6.0) -> FrozenEncodec:
    """Build a frozen :class:`FrozenEncodec` from a local EnCodec 24 kHz state-dict file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"model.encodec_weights: {str(path)!r} does not exist; stage "
                          "encodec_24khz-d7cc33bc.th on a filesystem the compute nodes see (docs/creative.md)")
    _check_published_hash(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(f"model.encodec_weights: {str(path)!r} is not a readable torch state dict "
                          f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    model = _encodec_model()
    expected = model.state_dict()
    if not isinstance(state, dict) or "encoder.model.0.conv.conv.weight_v" not in state:
        raise ConfigError(f"model.encodec_weights: {str(path)!r} does not look like an EnCodec 24 kHz "
                          "state dict (no 'encoder.model.0.conv.conv.weight_v')")
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or shapes:
        parts = [f"{what} {', '.join(keys[:3])}" for what, keys in
                 (("lacks", missing), ("has unexpected", unexpected), ("has mis-shaped", shapes)) if keys]
        raise ConfigError(f"model.encodec_weights: {str(path)!r} {'; '.join(parts)}; is it the 24 kHz EnCodec "
                          "model?")
    if bandwidth_kbps not in model.target_bandwidths:
        raise ConfigError(f"model.encodec_weights: {bandwidth_kbps} kbps is not one of the 24 kHz model's "
                          f"bandwidths {model.target_bandwidths}")
    model.load_state_dict(state)
    _fold_weight_norm(model)
    model.requires_grad_(False)
    return FrozenEncodec(model.eval(), bandwidth_kbps)


def write_random_encodec_weights(path: str | Path, *, seed: int = 0) -> None:
    """Write a RANDOMLY INITIALISED state dict saved from the package's own 24 kHz model, i.e. in the
    layout of the official file (plumbing tests only: it exercises loading, shapes and gradients,
    not what a trained EnCodec sounds like). Codebooks get random entries (the package leaves them
    to k-means initialisation on the first training batch)."""
    torch.manual_seed(seed)
    state = _encodec_model().state_dict()
    for key, value in state.items():
        if key.endswith("._codebook.embed"):
            value.copy_(torch.randn_like(value))
        elif key.endswith("._codebook.inited"):
            value.fill_(1.0)
    torch.save(state, path)
