"""The speech-enhancement task's config sections (torch-free): generator, discriminator, losses and
GAN schedule, the PESQ labelling pool, validation metrics, kept checkpoints."""

from __future__ import annotations

import dataclasses

from trainer.core.config import CheckpointConfig, GanScheduleConfig, TrainConfig, ValidConfig
from trainer.core.settings import FREE, TRAJECTORY, ConfigError, Section, setting

GENERATORS = ("bsrnn", "cmgan", "mpsenet")  # trainer/tasks/speech/models registers each (a test keeps the two in step)
METRICS = ("loss", "pesq", "stoi", "composite")  # validation metrics a best_<metric> checkpoint may track


@dataclasses.dataclass(kw_only=True)
class SpeechModelConfig(Section):
    name: str = setting("bsrnn", "generator architecture (trainer/tasks/speech/models)",
                        choices=GENERATORS, resume=TRAJECTORY)
    num_channels: int = setting(64, "bsrnn: feature width of the band-split RNN (the paper uses 64-128); "
                                    "cmgan, mpsenet: channels of the dense encoder/decoders (published: 64; "
                                    "a multiple of 4, the attention heads)", min=1, resume=TRAJECTORY)
    num_layers: int = setting(6, "bsrnn: number of band/time RNN blocks; cmgan: two-stage conformer blocks; "
                                 "mpsenet: two-stage transformer blocks (both published with 4)",
                              min=1, resume=TRAJECTORY)
    num_bands: int = setting(0, "bsrnn: band-split layout: 0 = the default split for the sample rate (100 Hz "
                                "bands to 1 kHz, 250 Hz to 4 kHz, 500 Hz to 8 kHz, 1 kHz to 16 kHz, ...); "
                                "N = N bands of (nearly) equal width", min=0, resume=TRAJECTORY)

    def validate(self) -> None:
        if self.name in ("cmgan", "mpsenet") and self.num_channels % 4:
            raise ConfigError(f"num_channels: {self.num_channels} must be a multiple of 4 for {self.name} "
                              "(its attention has 4 heads; published: 64)")


@dataclasses.dataclass(kw_only=True)
class MetricDiscriminatorConfig(Section):
    num_channels: int = setting(16, "base channel count of the MetricGAN discriminator (CMGAN, MP-SENet: 16)",
                                min=1, resume=TRAJECTORY)
    dropout: float = setting(0.3, "dropout between the two linear layers (CMGAN, MP-SENet: 0.3)",
                             min=0.0, max=0.9, resume=TRAJECTORY)
    sigmoid_beta: float = setting(1.0, "output range (0, beta) of the learnable sigmoid (CMGAN, MP-SENet: 1; "
                                       "MetricGAN+ uses 1.2 to let D overshoot the best PESQ)",
                                  min=0.1, resume=TRAJECTORY)


@dataclasses.dataclass(kw_only=True)
class SpeechLossConfig(GanScheduleConfig):
    w_ri: float = setting(0.1, "weight of the real/imaginary (complex) spectrum MSE (MP-SENet's complex loss "
                               "is the same term)", min=0.0, resume=TRAJECTORY)
    w_mag: float = setting(0.9, "weight of the compressed magnitude MSE", min=0.0, resume=TRAJECTORY)
    w_time: float = setting(0.2, "weight of the waveform L1", min=0.0, resume=TRAJECTORY)
    w_phase: float = setting(0.0, "weight of MP-SENet's anti-wrapping phase loss (instantaneous phase + group "
                                  "delay + instantaneous angular frequency; MP-SENet: 0.3; 0 = off)",
                             min=0.0, resume=TRAJECTORY)
    w_consistency: float = setting(0.0, "weight of the STFT consistency loss: RI distance between the estimate's "
                                        "spectrum and the analysis of its own wave (MP-SENet: 0.1; 0 = off)",
                                   min=0.0, resume=TRAJECTORY)


@dataclasses.dataclass(kw_only=True)
class SpeechTrainConfig(TrainConfig):
    pesq_workers: int | None = setting(None, "processes labelling the discriminator's items with PESQ, per rank "
                                             "(null = this rank's cores, at most the batch size; 0 = in-process)",
                                       min=0, resume=FREE)


@dataclasses.dataclass(kw_only=True)
class SpeechValidConfig(ValidConfig):
    stoi_every: int = setting(1, "compute STOI and ESTOI every this many validations", min=1, resume=FREE)
    composite_metrics: bool = setting(False, "also CSIG/CBAK/COVL (slower)", resume=FREE)


@dataclasses.dataclass(kw_only=True)
class SpeechCheckpointConfig(CheckpointConfig):
    keep_best: list[str] = setting(default_factory=lambda: ["loss", "pesq", "stoi", "composite"],
                                   help=f"best_<metric> checkpoints to keep; metrics: {', '.join(METRICS)}",
                                   resume=FREE)

