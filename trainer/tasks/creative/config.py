"""The creative-agent task's config sections (torch-free)."""

from __future__ import annotations

import dataclasses

from trainer.core.config import CheckpointConfig, ConfigError, GanScheduleConfig
from trainer.core.settings import FREE, TRAJECTORY, Section, setting

METRICS = ("loss", "complementarity")  # validation metrics a best_<metric> checkpoint may track


@dataclasses.dataclass(kw_only=True)
class CreativeModelConfig(Section):
    name: str = setting("creative_agent", "generator architecture (trainer/tasks/creative/models)",
                        choices=("creative_agent",), resume=TRAJECTORY)
    dim: int = setting(128, "transformer width", min=8, resume=TRAJECTORY)
    num_heads: int = setting(8, "attention heads", min=1, resume=TRAJECTORY)
    num_transformer_layers: int = setting(6, "transformer layers", min=1, resume=TRAJECTORY)
    num_stages: int = setting(3, "cascade stages refining the mix", min=1, resume=TRAJECTORY)
    anti_cheat_noise: float = setting(0.9, "noise std added to the inputs of stages 2+ (training only)",
                                      min=0.0, resume=TRAJECTORY)
    front_end: str = setting("stft", "encoder front-end", choices=("stft", "encodec"), resume=TRAJECTORY)
    encodec_weights: str = setting("", "local path to EnCodec 24 kHz weights (front_end=encodec)", resume=TRAJECTORY)

    def validate(self) -> None:
        if self.dim % self.num_heads:
            raise ConfigError(f"dim: {self.dim} must be divisible by num_heads={self.num_heads}")
        if self.front_end == "encodec" and not self.encodec_weights:
            raise ConfigError("encodec_weights: required when front_end is encodec (compute nodes have no "
                              "internet; stage the file and give its path)")


@dataclasses.dataclass(kw_only=True)
class CreativeDiscriminatorConfig(Section):
    num_channels: int = setting(16, "base channel count of the real/fake critic", min=1, resume=TRAJECTORY)


@dataclasses.dataclass(kw_only=True)
class CreativeLossConfig(GanScheduleConfig):
    w_gan: float = setting(0.1, "final weight of the least-squares GAN term", min=0.0, resume=TRAJECTORY)
    w_input: float = setting(0.0, "reconstruction towards the input", min=0.0, resume=TRAJECTORY)
    w_target: float = setting(0.0, "reconstruction towards the target", min=0.0, resume=TRAJECTORY)
    w_spectral: float = setting(0.0, "spectral convergence to the mix of both sources", min=0.0, resume=TRAJECTORY)
    w_mel: float = setting(0.0, "mel-spectrogram L1 to the mix of both sources", min=0.0, resume=TRAJECTORY)
    w_mask_reg: float = setting(0.1, "mask regularisation (masks away from 0/1 extremes)", min=0.0, resume=TRAJECTORY)
    w_balance: float = setting(5.0, "(m_in-0.5)^2 + (m_tgt-0.5)^2", min=0.0, resume=TRAJECTORY)
    w_novelty: float = setting(0.0, "penalise output correlation with either source", min=0.0, resume=TRAJECTORY)
    w_temporal: float = setting(0.0, "temporal diversity of the masks", min=0.0, resume=TRAJECTORY)
    temporal_target: float = setting(0.10, "target std of the masks over time", min=0.0, resume=TRAJECTORY)
    mel_bins: int = setting(80, "mel bands of the mel loss (fewer for tiny test STFTs)", min=1, resume=TRAJECTORY)


@dataclasses.dataclass(kw_only=True)
class CreativeCheckpointConfig(CheckpointConfig):
    keep_best: list[str] = setting(default_factory=lambda: ["loss", "complementarity"],
                                   help=f"best_<metric> checkpoints to keep; metrics: {', '.join(METRICS)}",
                                   resume=FREE)
