"""One mixture: its parameters drawn from a seed, and the signals rendered from them (no I/O, no torch).

:func:`draw` is a pure function of its generator (seeded by the caller from (seed, epoch, index)),
the corpora's sizes and the mixing settings; :func:`render` is a pure function of the parameters
and the audio. Definitions:

- ``clean`` (the target) is the speech crop at the drawn level (RMS over the crop in dBFS); under
  reverberation it is the speech convolved with the RIR's first ``early_reflections_ms`` (or the dry
  speech, ``reverb_target: dry``), while the model input carries the whole RIR.
- the noises (each at unit RMS over the crop, looped with a cross-fade when shorter) are summed and
  scaled so that ``10 log10(sum(clean**2) / sum(noise**2)) = snr_db`` over the crop.
- ``noisy = clean + noise`` exactly (float32) without reverberation and augmentations; with
  reverberation ``noisy = reverberant speech + noise``; band-limiting and clipping then change the
  noisy input only, a gain changes both.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import fft as sfft

TINY = 1e-20


@dataclasses.dataclass
class Pick:
    corpus: int
    item: int
    offset: int = 0


@dataclasses.dataclass
class MixParams:
    speech: Pick
    level_dbfs: float
    snr_db: float
    noises: list[Pick]
    rir: Pick | None = None
    bandlimit_rate: int | None = None
    clip_quantile: float | None = None
    gain_db: float | None = None


def pick_corpus(rng: np.random.Generator, weights: np.ndarray) -> int:
    return int(rng.choice(len(weights), p=weights)) if len(weights) > 1 else 0


def uniform(rng: np.random.Generator, pair) -> float:
    return float(rng.uniform(pair[0], pair[1])) if pair[0] < pair[1] else float(pair[0])


def draw(rng: np.random.Generator, sizes: dict[str, list[np.ndarray]], weights: dict[str, np.ndarray], mixing,
         crop: int | None, sample_rate: int, speech_item: tuple[int, int] | None = None) -> MixParams:
    """The parameters of one mixture. ``sizes[kind][corpus]``: item lengths; ``crop``: samples (None =
    the whole speech item); ``speech_item``: (corpus, item) fixed by the caller (validation)."""
    if speech_item is None:
        corpus = pick_corpus(rng, weights["speech"])
        speech_item = (corpus, int(rng.integers(len(sizes["speech"][corpus]))))
    corpus, item = speech_item
    length = int(sizes["speech"][corpus][item])
    crop = length if crop is None else crop
    speech = Pick(corpus, item, int(rng.integers(length - crop + 1)) if length > crop else 0)
    level, snr = uniform(rng, mixing.speech_level_dbfs), uniform(rng, mixing.snr_db)
    count = int(rng.integers(mixing.noises_per_mixture[0], mixing.noises_per_mixture[1] + 1))
    noises = []
    for _ in range(count):
        k = pick_corpus(rng, weights["noise"])
        i = int(rng.integers(len(sizes["noise"][k])))
        noise_length = int(sizes["noise"][k][i])  # shorter than the crop: looped, starting anywhere
        noises.append(Pick(k, i, int(rng.integers(noise_length - crop + 1 if noise_length >= crop else noise_length))))
    params = MixParams(speech, level, snr, noises)
    if sizes.get("rir") and rng.random() < mixing.reverb_probability:
        k = pick_corpus(rng, weights["rir"])
        params.rir = Pick(k, int(rng.integers(len(sizes["rir"][k]))))
    rates = [r for r in mixing.bandlimit_rates if r < sample_rate]
    if rates and rng.random() < mixing.bandlimit_probability:
        params.bandlimit_rate = int(rates[int(rng.integers(len(rates)))])
    if rng.random() < mixing.clipping_probability:
        params.clip_quantile = uniform(rng, mixing.clipping_quantile)
    if rng.random() < mixing.gain_probability:
        params.gain_db = uniform(rng, mixing.gain_db)
    return params


def loop_noise(wave: np.ndarray, offset: int, num: int, fade: int) -> np.ndarray:
    """``num`` samples of ``wave`` repeated from ``offset`` on, each seam a linear cross-fade of ``fade``."""
    length = len(wave)
    if offset + num <= length:
        return wave[offset:offset + num]
    fade = min(fade, length // 2)
    hop = length - fade
    repeats = math.ceil((offset + num - length) / hop) + 1
    out = np.zeros(hop * (repeats - 1) + length, dtype=np.float64)
    ramp = (np.arange(1, fade + 1) / (fade + 1)) if fade else np.zeros(0)
    for r in range(repeats):
        start = r * hop
        piece = wave.astype(np.float64)
        if r > 0 and fade:
            out[start:start + fade] = out[start:start + fade] * (1 - ramp) + piece[:fade] * ramp
            out[start + fade:start + length] = piece[fade:]
        else:
            out[start:start + length] = piece
    return out[offset:offset + num].astype(np.float32)


def _rms(wave: np.ndarray) -> float:
    return math.sqrt(float(np.square(wave, dtype=np.float64).mean()) + TINY)


def reverberate(speech: np.ndarray, rir: np.ndarray, early: int, target: str) -> tuple[np.ndarray, np.ndarray]:
    """(target, reverberant speech), both as long as ``speech`` (the RIR starts at its direct path).

    One float32 FFT of the speech serves both convolutions (the early target's and the whole RIR's)."""
    size = sfft.next_fast_len(len(speech) + len(rir) - 1, real=True)
    spectrum = sfft.rfft(speech.astype(np.float32), size)
    wet = sfft.irfft(spectrum * sfft.rfft(rir.astype(np.float32), size), size)[:len(speech)].astype(np.float64)
    if target == "dry":
        return speech.astype(np.float64), wet
    kept = rir[:max(1, early)].astype(np.float32)
    return sfft.irfft(spectrum * sfft.rfft(kept, size), size)[:len(speech)].astype(np.float64), wet


def bandlimit(wave: np.ndarray, rate: int, sample_rate: int) -> np.ndarray:
    """Zero every frequency above ``rate / 2`` (a brick-wall low-pass in the DFT domain)."""
    spectrum = np.fft.rfft(wave.astype(np.float64))
    keep = int(len(wave) * (rate / 2) / sample_rate) + 1
    spectrum[keep:] = 0
    return np.fft.irfft(spectrum, n=len(wave))


def render(params: MixParams, speech: np.ndarray, noises: list[np.ndarray], rir: np.ndarray | None, mixing,
           sample_rate: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """(clean, noisy, gains) float32 of ``len(speech)`` samples; ``noises`` already cut/looped to that length."""
    if rir is not None:
        early = int(round(mixing.early_reflections_ms * sample_rate / 1000))
        target, wet = reverberate(speech, rir, early, mixing.reverb_target)
    else:
        target = wet = speech.astype(np.float64)
    speech_gain = 10 ** (params.level_dbfs / 20) / _rms(target)
    clean = (target * speech_gain).astype(np.float32)
    summed = np.zeros(len(speech), dtype=np.float64)
    for noise in noises:
        summed += noise.astype(np.float64) / _rms(noise)
    clean_energy = float(np.square(clean, dtype=np.float64).sum())
    noise_energy = float(np.square(summed).sum())
    noise_gain = math.sqrt(clean_energy / (noise_energy * 10 ** (params.snr_db / 10))) if noise_energy > TINY else 0.0
    noise = (summed * noise_gain).astype(np.float32)
    if rir is None:
        noisy = clean + noise
    else:
        noisy = ((wet * speech_gain) + noise.astype(np.float64)).astype(np.float32)
    if params.bandlimit_rate is not None:
        noisy = bandlimit(noisy, params.bandlimit_rate, sample_rate).astype(np.float32)
    if params.clip_quantile is not None:
        level = float(np.quantile(np.abs(noisy), params.clip_quantile))
        noisy = np.clip(noisy, -level, level)
    if params.gain_db is not None:
        gain = np.float32(10 ** (params.gain_db / 20))
        clean, noisy = clean * gain, noisy * gain
    gains = {"speech_gain_db": 20 * math.log10(speech_gain),
             "noise_gain_db": 20 * math.log10(noise_gain) if noise_gain > 0 else None}
    return clean, noisy, gains
