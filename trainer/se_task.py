"""The speech-enhancement task: what one training step and one validation item compute.

The loop (``trainer.train``) is model-family agnostic; a task supplies the networks, the
generator loss, the discriminator loss with its labels, and per-utterance validation.
"""

from __future__ import annotations

import numpy as np
import torch

from trainer import losses, spectral
from trainer.config import Config
from trainer.metrics import PesqLabeler
from trainer.models import build_discriminator, build_generator


class SpeechTask:
    signal_names = ("clean", "noisy")
    # Validation metrics where larger is better (the rest, e.g. loss, are minimised).
    maximise = ("pesq", "stoi", "ssnr", "composite", "csig", "cbak", "covl")

    def __init__(self, cfg: Config, device: torch.device, labeler: PesqLabeler):
        self.cfg, self.device, self.labeler = cfg, device, labeler

    def build_models(self) -> tuple[torch.nn.Module, torch.nn.Module]:
        return build_generator(self.cfg), build_discriminator(self.cfg)

    def clean_magnitude(self, clean: torch.Tensor) -> torch.Tensor:
        spec = spectral.stft(clean, self.cfg.stft)
        return spectral.compressed_magnitude(spec, self.cfg.stft.compress_factor, self.cfg.stft.eps)

    def generator_step(self, generator, discriminator, batch: dict, gan_weight: float):
        """Forward + loss. Returns (total, terms, context for the discriminator step)."""
        clean = batch["clean"].to(self.device, non_blocking=True)
        noisy = batch["noisy"].to(self.device, non_blocking=True)
        out = generator(noisy)
        total, terms = losses.generator_loss(out, clean, self.cfg, gan_weight,
                                             discriminator if gan_weight > 0 else None)
        context = {"clean": clean, "out": out, "lengths": batch["lengths"]}
        return total, terms, context

    def discriminator_step(self, discriminator, context: dict):
        """Label the estimates with PESQ (failed items masked) and compute the D loss."""
        clean, out = context["clean"], context["out"]
        estimate = out["wave"].detach()
        scores, valid = self.labeler.score(clean.float().cpu().numpy(), estimate.float().cpu().numpy(),
                                           context["lengths"].numpy(), sr=self.cfg.data.sample_rate)
        target = torch.as_tensor(scores, dtype=torch.float32, device=self.device)
        valid_mask = torch.as_tensor(valid, dtype=torch.bool, device=self.device)
        clean_mag = self.clean_magnitude(clean)
        loss, info = losses.discriminator_loss(discriminator, clean_mag, out["mag"].detach(), target, valid_mask)
        return loss, {"num_valid": int(valid.sum()), "num_items": int(len(valid)), **_floats(info)}

    def validation_metrics(self, validation_index: int, last: bool) -> tuple[str, ...]:
        """Metrics of this validation: PESQ and SSNR always, STOI every ``valid.stoi_every``."""
        which = ["pesq", "ssnr"]
        if validation_index % self.cfg.valid.stoi_every == 0 or last:
            which.append("stoi")
        if self.cfg.valid.composite_metrics:
            which += ["csig", "cbak", "covl"]
        return tuple(which)

    def window_extras(self, means: dict) -> dict:
        return {}

    @torch.no_grad()
    def validate_item(self, generator, discriminator, batch: dict) -> dict:
        """One utterance (batch of 1): loss terms, D outputs, and the signals for the metrics."""
        clean = batch["clean"].to(self.device)
        noisy = batch["noisy"].to(self.device)
        out = generator(noisy)
        # Validation loss: the reconstruction terms only (no GAN term), so it is comparable
        # across epochs whatever the GAN schedule.
        total, terms = losses.generator_loss(out, clean, self.cfg, 0.0, None)
        clean_mag = self.clean_magnitude(clean)
        d_clean = discriminator(clean_mag, clean_mag).float().mean().item()
        d_estimate = discriminator(clean_mag, out["mag"]).float().mean().item()
        length = int(batch["lengths"][0])
        return {
            "name": batch["names"][0],
            "loss": float(total),
            **{f"loss_{k}": float(v) for k, v in terms.items() if k != "gan"},
            "d_clean": d_clean,
            "d_estimate": d_estimate,
            "clean": clean[0, :length].float().cpu().numpy(),
            "enhanced": out["wave"][0, :length].float().cpu().numpy(),
        }


def _floats(info: dict) -> dict:
    out = {}
    for key, value in info.items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            out[key] = float(value)
        elif isinstance(value, (int, float, np.floating)):
            out[key] = float(value)
    return out
