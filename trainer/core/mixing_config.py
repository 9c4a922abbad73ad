"""The ``mixing`` config section: training mixtures made on the fly from speech, noise and RIR corpora.

Torch-free (the launcher validates configs without torch). The mixing itself is
``trainer/data/mixing.py``; the corpora are packed by ``python -m trainer.prepare --kind ...``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from trainer.core.settings import FREE, TRAJECTORY, ConfigError, Section, setting

CORPUS_HELP = ("a folder packed with `python -m trainer.prepare --kind {kind}` (its train/ split is mixed, its "
               "valid/ split makes the validation set), or a list of {{path, weight}}: each mixture draws a "
               "corpus with probability weight / sum of weights, then an item of it uniformly")


def corpus_list(value: str | list, key: str) -> list[tuple[str, float]]:
    """``value`` (a folder or a list of folders / ``{path, weight}``) as ``[(path, weight), ...]``."""
    if isinstance(value, str):
        return [(value, 1.0)] if value else []
    out = []
    for i, item in enumerate(value):
        where = f"{key}[{i}]"
        if isinstance(item, str):
            item = {"path": item}
        if not isinstance(item, dict):
            raise ConfigError(f"{where}: {item!r} is not a folder or a mapping {{path, weight}}")
        unknown = sorted(set(item) - {"path", "weight"})
        if unknown:
            raise ConfigError(f"{where}: unknown key {unknown[0]!r}; valid keys: path, weight")
        path, weight = item.get("path"), item.get("weight", 1.0)
        if not isinstance(path, str) or not path:
            raise ConfigError(f"{where}.path: {path!r} is not a folder name")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) \
                or weight < 0:
            raise ConfigError(f"{where}.weight: {weight!r} must be a finite number >= 0")
        out.append((path, float(weight)))
    if out and not any(w > 0 for _, w in out):
        raise ConfigError(f"{key}: every weight is zero; give at least one corpus a positive weight")
    return out


def _check_range(key: str, pair: list, low: float | None = None, high: float | None = None) -> None:
    if len(pair) != 2:
        raise ConfigError(f"{key}: {pair!r} must be [lo, hi]")
    if pair[0] > pair[1]:
        raise ConfigError(f"{key}: {pair!r} is reversed; write [lo, hi] with lo <= hi")
    for v in pair:
        if (low is not None and v < low) or (high is not None and v > high):
            raise ConfigError(f"{key}: {pair!r} must lie within [{low}, {high}]")


@dataclasses.dataclass(kw_only=True)
class MixingConfig(Section):
    demo: bool = setting(False, "train on mixtures of the built-in demo speech, noise and RIR corpora (built once "
                                "under logs/demo_mixing; instead of speech/noise/rir)", resume=TRAJECTORY)
    speech: str | list[Any] = setting("", "speech corpus: " + CORPUS_HELP.format(kind="speech")
                                      + "; set = train on mixtures made on the fly (data.train_dir must be empty)",
                                      resume=TRAJECTORY)
    noise: str | list[Any] = setting("", "noise corpus (required with speech): " + CORPUS_HELP.format(kind="noise"),
                                     resume=TRAJECTORY)
    rir: str | list[Any] = setting("", "room impulse responses (empty = no reverberation): "
                                   + CORPUS_HELP.format(kind="rir"), resume=TRAJECTORY)
    snr_db: list[float] = setting(default_factory=lambda: [-5.0, 20.0],
                                  help="SNR range [lo, hi] in dB, drawn uniformly: the energy ratio of the target "
                                       "to the added noise over the crop (URGENT 2024's range; DNS uses -5..15)",
                                  resume=TRAJECTORY)
    speech_level_dbfs: list[float] = setting(default_factory=lambda: [-35.0, -15.0],
                                             help="level of the target (RMS over the crop, dBFS) drawn uniformly "
                                                  "in [lo, hi] (the DNS-Challenge synthesiser's range)",
                                             resume=TRAJECTORY)
    noises_per_mixture: list[int] = setting(default_factory=lambda: [1, 2],
                                            help="number of noise items summed per mixture, uniform in [lo, hi] "
                                                 "(each at unit RMS before the sum is scaled to the SNR)",
                                            resume=TRAJECTORY)
    noise_crossfade_ms: float = setting(50.0, "noise shorter than the crop is looped with a linear cross-fade of "
                                              "this length at each seam", min=0.0, resume=TRAJECTORY)
    reverb_probability: float = setting(0.5, "probability that a mixture's speech is reverberated with a RIR "
                                             "(needs rir; URGENT 2024 uses 0.5)", min=0.0, max=1.0, resume=TRAJECTORY)
    reverb_target: str = setting("early", "target under reverberation: early = speech convolved with the RIR's "
                                          "first early_reflections_ms (the default: early reflections are heard "
                                          "as part of the voice, and asking a model to remove them costs quality, "
                                          "the choice of the DNS Challenge and URGENT), dry = the dry speech",
                                 choices=("early", "dry"), resume=TRAJECTORY)
    early_reflections_ms: float = setting(50.0, "length of the RIR kept for the early target (after its onset)",
                                          min=0.0, resume=TRAJECTORY)
    bandlimit_probability: float = setting(0.0, "probability of band-limiting the noisy input (a low-pass at "
                                                "half a rate drawn from bandlimit_rates)",
                                           min=0.0, max=1.0, resume=TRAJECTORY)
    bandlimit_rates: list[int] = setting(default_factory=lambda: [8000, 16000, 22050, 24000, 32000],
                                         help="sample rates whose Nyquist frequency band-limiting keeps (rates at "
                                              "or above data.sample_rate are skipped)", resume=TRAJECTORY)
    clipping_probability: float = setting(0.0, "probability of clipping the noisy input",
                                          min=0.0, max=1.0, resume=TRAJECTORY)
    clipping_quantile: list[float] = setting(default_factory=lambda: [0.9, 0.99],
                                             help="clipping level: this quantile of |noisy|, drawn in [lo, hi]",
                                             resume=TRAJECTORY)
    gain_probability: float = setting(0.0, "probability of a gain on both noisy and target (no effect with "
                                           "data.normalize)", min=0.0, max=1.0, resume=TRAJECTORY)
    gain_db: list[float] = setting(default_factory=lambda: [-6.0, 6.0],
                                   help="gain range [lo, hi] in dB", resume=TRAJECTORY)
    items_per_epoch: int | None = setting(None, "mixtures per epoch (null = the number of training speech items; "
                                                "fix it to bound an epoch on DNS-scale corpora)",
                                          min=1, resume=TRAJECTORY)
    valid_items: int | None = setting(None, "validation mixtures (null = one per held-out speech item)",
                                      min=1, resume=TRAJECTORY)
    valid_dir: str = setting("", "where the fixed validation set is synthesised once (empty = "
                                 "logs/mixing_valid/<digest of the corpora and settings>); data.valid_dir, when "
                                 "set, is used instead", resume=FREE)

    @property
    def active(self) -> bool:
        """Training mixes on the fly (the ``mixing`` data kind)."""
        return bool(self.speech) or self.demo

    def validate(self) -> None:
        for name in ("speech", "noise", "rir"):
            corpus_list(getattr(self, name), name)
        if self.demo and (self.speech or self.noise or self.rir):
            raise ConfigError("demo: true mixes the demo corpora; leave speech, noise and rir empty (or demo false)")
        if self.speech and not self.noise:
            raise ConfigError("noise: required with mixing.speech (a folder packed with prepare --kind noise)")
        _check_range("snr_db", self.snr_db)
        _check_range("speech_level_dbfs", self.speech_level_dbfs, high=0.0)
        _check_range("noises_per_mixture", self.noises_per_mixture, low=1)
        _check_range("clipping_quantile", self.clipping_quantile, low=0.0, high=1.0)
        _check_range("gain_db", self.gain_db)
        if self.reverb_probability > 0 and self.speech and not self.rir:
            raise ConfigError("reverb_probability: needs mixing.rir (a folder packed with prepare --kind rir), or "
                              "set it to 0")
        if not self.bandlimit_rates or min(self.bandlimit_rates) < 1000:
            raise ConfigError(f"bandlimit_rates: {self.bandlimit_rates!r} must be rates of at least 1000 Hz")
