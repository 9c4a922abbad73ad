"""The training config: one typed home for each setting.

``load_config(path, overrides)`` reads a YAML file (with optional ``base:`` chain), applies
``--set section.key=value`` overrides and returns a validated :class:`Config`. Importing this
module never imports torch, so the login-node launcher can validate configs in milliseconds.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

from trainer.core.io import atomic_write_text
from trainer.core.log import get_logger
from trainer.core.mixing_config import MixingConfig
from trainer.core.registry import task_spec
from trainer.core.settings import (
    FREE,
    TRAJECTORY,
    ConfigError,
    Section,
    apply_overrides,
    build,
    dump_yaml,
    read_with_bases,
    resume_classes,
    section,
    setting,
    to_dict,
)

log = get_logger("config")
MAX_SEED = (2**32 - 1000) // 1000  # rank r seeds NumPy with seed * 1000 + r, which must stay below 2**32

__all__ = ["Config", "ConfigError", "load_config", "config_from_dict", "config_class", "save_config", "to_dict"]


@dataclasses.dataclass(kw_only=True)
class RunConfig(Section):
    name: str = setting("run", "human-readable run name; the default run directory is logs/runs/<name>", resume=FREE)
    dir: str | None = setting(None, "run directory (checkpoints, metrics.jsonl, config.yaml); "
                                    "default logs/runs/<name>; --run-dir overrides it", resume=FREE)
    seed: int = setting(0, "global seed; each rank derives its own streams from it (seed * 1000 + rank, and "
                           "NumPy takes seeds below 2**32)", min=0, max=MAX_SEED, resume=TRAJECTORY)

    def validate(self) -> None:
        if not self.name or any(c in self.name for c in "/\\ \t\n'\"$`;&|<>*?"):
            raise ConfigError(f"name: {self.name!r} must be non-empty and contain no spaces, slashes, "
                              "quotes or shell metacharacters")


@dataclasses.dataclass(kw_only=True)
class DataConfig(Section):
    train_dir: str = setting("", "folder with the packed training shards and manifest.json "
                                 "(python -m trainer.prepare); empty with demo=true", resume=TRAJECTORY)
    valid_dir: str = setting("", "folder with the held-out validation shards (prepare --valid-speakers "
                                 "writes OUT/train and OUT/valid); never the test set", resume=TRAJECTORY)
    demo: bool = setting(False, "build (once) and use the small built-in demo corpus under logs/demo_corpus",
                         resume=TRAJECTORY)
    sample_rate: int = setting(16000, "expected sample rate of the shards (Hz); a mismatch is an error",
                               min=1000, resume=TRAJECTORY)
    crop_seconds: float = setting(2.0, "length of the random training crop (s); shorter utterances are "
                                       "zero-padded at the end", min=0.1, resume=TRAJECTORY)
    valid_max_seconds: float | None = setting(None, "validation: deterministic centre crop of at most this "
                                                    "many seconds (null = whole utterances)",
                                              min=0.25, resume=TRAJECTORY)
    normalize: bool = setting(True, "CMGAN convention: scale noisy to unit RMS and clean by the same factor",
                              resume=TRAJECTORY)
    batch_size: int = setting(4, "training batch size per rank (per GPU)", min=1, resume=TRAJECTORY)
    num_workers: int = setting(2, "DataLoader worker processes per rank (0 = load in the main process)",
                               min=0, resume=FREE)
    shuffle_targets: bool = setting(False, "pair each input with a random reference each epoch (unpaired "
                                           "training, e.g. the creative variant's mixes)", resume=TRAJECTORY)
    verify_checksums: bool = setting(True, "check every shard's sha256 against manifest.json when a loader "
                                           "is built (each rank hashes its share; a corrupted copy is an error)",
                                     resume=FREE)


@dataclasses.dataclass(kw_only=True)
class StftConfig(Section):
    n_fft: int = setting(400, "FFT size in samples (400 = 25 ms at 16 kHz, the CMGAN setting)",
                         min=16, resume=TRAJECTORY)
    hop_length: int = setting(100, "hop in samples", min=1, resume=TRAJECTORY)
    window: str = setting("hann", "analysis window", choices=("hann", "hamming"), resume=TRAJECTORY)
    compress_factor: float = setting(0.3, "power-law magnitude compression exponent",
                                     min=0.05, max=1.0, resume=TRAJECTORY)
    eps: float = setting(1e-8, "added to the magnitude before compression (keeps gradients finite)",
                         min=0.0, resume=TRAJECTORY)

    def validate(self) -> None:
        if self.hop_length > self.n_fft:
            raise ConfigError(f"hop_length: {self.hop_length} must not exceed n_fft={self.n_fft}")


@dataclasses.dataclass(kw_only=True)
class GanScheduleConfig(Section):
    """When the GAN term enters (shared by the tasks with a discriminator)."""

    w_gan: float = setting(0.05, "final weight of the GAN term", min=0.0, resume=TRAJECTORY)
    gan_start_fraction: float = setting(0.0, "fraction of train.epochs before the GAN term enters",
                                        min=0.0, max=1.0, resume=TRAJECTORY)
    gan_ramp_epochs: int = setting(0, "epochs of linear ramp from 0 to w_gan after it enters", min=0, resume=TRAJECTORY)


@dataclasses.dataclass(kw_only=True)
class OptimConfig(Section):
    name: str = setting("adamw", "optimizer for both networks", choices=("adam", "adamw"), resume=TRAJECTORY)
    lr: float = setting(5e-4, "generator learning rate", min=0.0, resume=TRAJECTORY)
    disc_lr_ratio: float = setting(2.0, "discriminator lr = lr * disc_lr_ratio (CMGAN uses 2)",
                                   min=0.0, resume=TRAJECTORY)
    betas: list[float] = setting(default_factory=lambda: [0.8, 0.99], help="Adam betas", resume=TRAJECTORY)
    weight_decay: float = setting(0.01, "decoupled weight decay (adamw)", min=0.0, resume=TRAJECTORY)
    scheduler: str = setting("step", "learning-rate schedule per epoch",
                             choices=("none", "step", "cosine", "exponential"), resume=TRAJECTORY)
    step_epochs: int = setting(30, "step: decay every this many epochs", min=1, resume=TRAJECTORY)
    step_gamma: float = setting(0.5, "step: decay factor", min=0.0, max=1.0, resume=TRAJECTORY)
    exp_gamma: float = setting(0.99, "exponential: lr = lr * exp_gamma ** epoch (MP-SENet's ExponentialLR: 0.99)",
                               min=0.0, max=1.0, resume=TRAJECTORY)
    grad_clip: float = setting(5.0, "clip the gradient norm of each network to this (0 = off; norm logged)",
                               min=0.0, resume=TRAJECTORY)
    grad_norm_alert: float = setting(100.0, "warn when a (pre-clipping) gradient norm is non-finite or exceeds "
                                            "this safety threshold (0 = only non-finite)", min=0.0, resume=FREE)

    def validate(self) -> None:
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"betas: {self.betas!r} must be two numbers in [0, 1)")


@dataclasses.dataclass(kw_only=True)
class TrainConfig(Section):
    epochs: int = setting(100, "number of epochs; raising it on an existing run extends the run", min=1, resume=FREE)
    max_steps_per_epoch: int | None = setting(None, "cap steps per epoch (smoke tests); null = full epoch",
                                              min=1, resume=TRAJECTORY)
    device: str = setting("auto", "auto = cuda when visible, else cpu", choices=("auto", "cpu", "cuda"), resume=FREE)
    amp: bool = setting(False, "bf16 autocast for the networks on CUDA (STFT stays fp32)", resume=TRAJECTORY)
    log_every: int = setting(10, "steps between step records in metrics.jsonl and the log", min=1, resume=FREE)
    overlap_labels: bool = setting(True, "start the discriminator's labels (the speech task's quality scores) as "
                                         "soon as the generator's forward pass has produced the estimates and run "
                                         "the generator's backward while they are computed; false = the serial "
                                         "order (the same losses)", resume=FREE)
    compile: bool = setting(False, "torch.compile the generator's training forward/backward (the weights, "
                                   "checkpoints, validation and inference stay eager); pays a compile at the "
                                   "start of every job; losses equal eager within float rounding, not bit for bit",
                            resume=FREE)
    compile_backend: str = setting("inductor", "train.compile's backend: inductor (fused kernels: Triton on CUDA, "
                                               "C++ on CPU, needs a working compiler), aot_eager (graph capture "
                                               "and AOT autograd, no code generation: a check, no speed-up)",
                                   choices=("inductor", "aot_eager"), resume=FREE)
    max_nonfinite_steps: int = setting(20, "stop after this many consecutive NaN/Inf losses", min=1, resume=FREE)
    init_from: str | None = setting(None, "start a NEW run from this checkpoint's generator (and discriminator, "
                                          "when it has one) weights with fresh optimizers: fine-tuning, not resume "
                                          "(ignored once the run has its own checkpoints/last.pt)", resume=FREE)
    deterministic: bool = setting(True, "deterministic algorithms (bit-exact resume on CPU)", resume=FREE)
    tensorboard: bool = setting(True, "also write every metrics.jsonl scalar and the validation audio/images as "
                                      "TensorBoard events to RUN_DIR/tensorboard (rank 0; needs pip install "
                                      "tensorboard); false = no writer and no import of tensorboard", resume=FREE)


@dataclasses.dataclass(kw_only=True)
class ValidConfig(Section):
    every_epochs: int = setting(1, "validate every this many epochs (always after the last)", min=1, resume=FREE)
    max_utterances: int | None = setting(None, "cap the validation set (smoke tests)", min=1, resume=TRAJECTORY)
    num_audio_samples: int = setting(4, "fixed validation utterances (evenly spaced over the split) whose audio "
                                        "and spectrograms go to TensorBoard at each validation, to listen to "
                                        "progress (0 = none; needs train.tensorboard)", min=0, resume=FREE)


@dataclasses.dataclass(kw_only=True)
class CheckpointConfig(Section):
    every_steps: int = setting(500, "save `last` every this many steps (0 = only at epoch end)", min=0, resume=FREE)
    every_minutes: float = setting(30.0, "also save `last` when this many minutes passed (0 = off)",
                                   min=0.0, resume=FREE)
    keep_best: list[str] = setting(default_factory=lambda: ["loss"],
                                   help="best_<metric> checkpoints to keep (the task says which metrics exist)",
                                   resume=FREE)


@dataclasses.dataclass(kw_only=True)
class Config(Section):
    """The whole config. ``model``, ``discriminator`` and ``loss`` (and specialised ``data``,
    ``valid``, ``checkpoint``) have the section types of the chosen task (its ``TaskSpec.sections``);
    :func:`config_class` builds that class."""

    task: str = setting("speech_enhancement", "which model family the training core runs (trainer/tasks/)",
                        resume=TRAJECTORY)
    run: RunConfig = section(RunConfig, "naming, run directory and seed")
    data: DataConfig = section(DataConfig, "sharded HDF5 data and loading")
    mixing: MixingConfig = section(MixingConfig, "training mixtures made on the fly from speech, noise and RIR "
                                                 "corpora (instead of data.train_dir)")
    stft: StftConfig = section(StftConfig, "STFT front-end shared by generator, losses and discriminator")
    model: Section = section(Section, "generator architecture (the task's)")
    discriminator: Section = section(Section, "discriminator architecture (the task's)")
    loss: Section = section(Section, "loss weights and the GAN schedule (the task's)")
    optim: OptimConfig = section(OptimConfig, "optimizers and schedules")
    train: TrainConfig = section(TrainConfig, "the training loop")
    valid: ValidConfig = section(ValidConfig, "validation")
    checkpoint: CheckpointConfig = section(CheckpointConfig, "when and what to save")

    def validate(self) -> None:
        if self.mixing.active:
            if self.data.train_dir or self.data.demo:
                raise ConfigError("data.train_dir: must be empty (and data.demo false) with mixing.speech or "
                                  "mixing.demo: training mixes on the fly; remove one of them")
        elif not self.data.demo and not self.data.train_dir:
            raise ConfigError("data.train_dir: required unless data.demo is true or mixing.speech is set")
        if not self.data.demo and not self.data.valid_dir and not self.mixing.active:
            raise ConfigError("data.valid_dir: required unless data.demo is true (checkpoint selection "
                              "needs a held-out split; pack one with prepare --valid-speakers)")
        metrics = task_spec(self.task).checkpoint_metrics
        for name in self.checkpoint.keep_best:
            if name not in metrics:
                raise ConfigError(f"checkpoint.keep_best: {name!r} is not one of {', '.join(metrics)} "
                                  f"(the metrics of task {self.task})")

    def run_dir(self) -> Path:
        return Path(self.run.dir) if self.run.dir else Path("logs") / "runs" / self.run.name


@functools.cache
def config_class(task: str) -> type[Config]:
    """``Config`` with the task's own section types (one class per task)."""
    spec = task_spec(task)
    fields = []
    for name, cls in spec.sections.items():
        if name not in {f.name for f in dataclasses.fields(Config)}:
            raise ValueError(f"task {task}: {name!r} is not a config section")
        fields.append((name, cls, section(cls, Config.__dataclass_fields__[name].metadata["help"])))
    cls = dataclasses.make_dataclass(f"Config_{task}", fields, bases=(Config,), kw_only=True)
    undeclared = [key for key, kind in resume_classes(cls).items() if kind is None]
    if undeclared:  # a programming error: every setting says whether a resume may change it
        raise TypeError(f"task {task}: settings without a resume class (setting(..., resume=TRAJECTORY or FREE)): "
                        + ", ".join(undeclared))
    return cls


def config_from_dict(data: dict) -> Config:
    task = data.get("task", "speech_enhancement") if isinstance(data, dict) else None
    if not isinstance(task, str):
        raise ConfigError(f"task: {task!r} is not a str")
    return build(config_class(task), drop_retired_keys(data, task_spec(task).retired_keys))


def drop_retired_keys(data: dict, retired: tuple[str, ...]) -> dict:
    """``data`` without the task's retired keys (settings older versions wrote into every frozen config
    and checkpoint, no longer the task's): old run directories resume, old checkpoints load."""
    for key in retired:
        section, _, name = key.partition(".")
        values = data.get(section)
        if isinstance(values, dict) and name in values:
            data = {**data, section: {k: v for k, v in values.items() if k != name}}
            if values[name] is not None:
                log.info("config: %s is not a setting of task %s (any more); its value %r is ignored",
                         key, data.get("task"), values[name])
    return data
def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load ``path`` (None: all defaults), apply ``section.key=value`` overrides, validate."""
    data = read_with_bases(path) if path is not None else {}
    data = apply_overrides(data, list(overrides))
    try:
        return config_from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}" if path else str(exc)) from None


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config atomically (the run directory's config.yaml)."""
    atomic_write_text(path, dump_yaml(cfg))
