"""Real and synthetic test audio without downloads.

- :func:`synthesize_speech` speaks a sentence with espeak-ng when it is installed (real speech,
  as used by the tests and the demo corpus), else falls back to :func:`speech_like`.
- :func:`speech_like` is a deterministic source-filter generator (glottal pulse train with
  moving pitch through three formant resonators, syllable-rate envelope, pauses) that PESQ
  accepts as speech. It is a stand-in for machines without espeak-ng, not real speech.
- :func:`mix_at_snr` adds noise at an exact SNR in dB.
- :func:`synthetic_pairs`: music-like (input, target) pairs for the creative variant.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

import numpy as np
import torch

SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "Six spoons of fresh snow peas, five thick slabs of blue cheese.",
    "We also need a small plastic snake and a big toy frog for the kids.",
    "She can scoop these things into three red bags.",
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It is easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.",
    "Four hours of steady work faced us.",
    "A large size in stockings is hard to sell.",
    "The boy was there when the sun rose.",
    "A rod is used to catch pink salmon.",
)
VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-029", "en-gb-x-rp", "en-gb-x-gbclan")


def have_espeak() -> bool:
    return shutil.which("espeak-ng") is not None


def resample(wave: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Band-limited resampling by FFT (adequate for test audio; prepare uses torchaudio)."""
    if sr_in == sr_out:
        return wave.astype(np.float32)
    num_out = int(round(len(wave) * sr_out / sr_in))
    spectrum = np.fft.rfft(wave.astype(np.float64))
    out_bins = num_out // 2 + 1
    resized = np.zeros(out_bins, dtype=np.complex128)
    keep = min(out_bins, len(spectrum))
    resized[:keep] = spectrum[:keep]
    return (np.fft.irfft(resized, n=num_out) * (num_out / len(wave))).astype(np.float32)


def synthesize_speech(text: str, sr: int = 16000, *, voice: str = "en-us", speed: int = 150,
                      pitch: int = 50, seed: int = 0) -> np.ndarray:
    """Speech for ``text`` at ``sr`` Hz, float32 in [-1, 1], peak about 0.5."""
    if not have_espeak():
        return speech_like(seconds=max(1.0, 0.065 * len(text)), sr=sr, seed=seed)
    import soundfile as sf

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "s.wav")
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", path, text],
                       check=True, capture_output=True)
        wave, sr_in = sf.read(path, dtype="float32")
    wave = resample(wave, sr_in, sr)
    peak = float(np.max(np.abs(wave))) or 1.0
    return (0.5 * wave / peak).astype(np.float32)


def _resonator(x: np.ndarray, freq: float, bandwidth: float, sr: int) -> np.ndarray:
    """Second-order IIR resonance (a formant), applied with scipy-free direct recursion."""
    r = np.exp(-np.pi * bandwidth / sr)
    a1, a2 = -2 * r * np.cos(2 * np.pi * freq / sr), r * r
    y = np.zeros_like(x)
    y1 = y2 = 0.0
    gain = 1 - r
    for i, xi in enumerate(x):  # short signals only; this is test-signal generation
        yi = gain * xi - a1 * y1 - a2 * y2
        y[i] = yi
        y2, y1 = y1, yi
    return y


def speech_like(seconds: float = 2.0, sr: int = 16000, seed: int = 0) -> np.ndarray:
    """A deterministic speech-like signal (voiced syllables with pauses)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    f0 = 120 + 40 * rng.random() + 25 * np.sin(2 * np.pi * 0.7 * t + rng.random() * 6)
    phase = np.cumsum(f0 / sr)
    pulses = (np.diff(np.floor(phase), prepend=0) > 0).astype(np.float64)
    source = pulses + 0.02 * rng.standard_normal(n)
    syllable_rate = 4.0 + rng.random()
    envelope = np.clip(np.sin(2 * np.pi * syllable_rate * t / 2) ** 2 * 1.2 - 0.1, 0, 1)
    pause = (np.sin(2 * np.pi * 0.45 * t + rng.random() * 6) > -0.6).astype(np.float64)
    voiced = np.zeros(n)
    vowels = ((730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480), (640, 1190, 2390))
    seg = int(sr / syllable_rate)
    for start in range(0, n, seg):
        formants = vowels[rng.integers(len(vowels))]
        chunk = source[start:start + seg]
        out = sum(_resonator(chunk, f, 80 + 0.05 * f, sr) for f in formants)
        voiced[start:start + seg] = out
    wave = voiced * envelope * pause
    peak = float(np.max(np.abs(wave))) or 1.0
    return (0.5 * wave / peak).astype(np.float32)


def mix_at_snr(clean: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``clean + g * noise`` with ``g`` chosen so that the SNR is exactly ``snr_db``."""
    noise = np.resize(noise, clean.shape)
    p_clean = float(np.mean(clean.astype(np.float64) ** 2))
    p_noise = float(np.mean(noise.astype(np.float64) ** 2)) or 1e-12
    gain = np.sqrt(p_clean / (p_noise * 10 ** (snr_db / 10)))
    return (clean + gain * noise).astype(np.float32)


def babble_like_noise(num_samples: int, sr: int = 16000, seed: int = 0) -> np.ndarray:
    """Coloured noise with a slow amplitude modulation (a DEMAND-like stand-in)."""
    rng = np.random.default_rng(seed)
    white = rng.standard_normal(num_samples + 64)
    coloured = np.convolve(white, np.hanning(8) / 4, mode="same")[:num_samples]
    t = np.arange(num_samples) / sr
    return (coloured * (0.7 + 0.3 * np.sin(2 * np.pi * 1.3 * t))).astype(np.float32)


def synthetic_pairs(num: int, seconds: float, sr: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``num`` (input, target) pairs for tests: a rhythmic click track (decaying noise bursts on a
    beat grid, 90-150 BPM, accented downbeats) and a chord tone (a major or minor triad of
    harmonic tones with a slow swell), at equal RMS within a pair. Returns two float32 tensors
    (num, round(seconds * sr))."""
    rng = np.random.default_rng(seed)
    length = int(round(seconds * sr))
    t = np.arange(length) / sr
    inputs, targets = np.zeros((num, length), np.float32), np.zeros((num, length), np.float32)
    click_len = max(1, int(0.08 * sr))
    decay = np.exp(-np.arange(click_len) / (0.015 * sr))
    for i in range(num):
        beat = 60.0 / rng.uniform(90, 150)
        for k, start in enumerate(np.arange(rng.uniform(0, min(beat, seconds) / 2), seconds, beat / 2)):
            begin = int(start * sr)
            end = min(length, begin + click_len)
            gain = 1.0 if k % 4 == 0 else 0.5
            inputs[i, begin:end] += gain * decay[:end - begin] * rng.standard_normal(end - begin)
        root = 110.0 * 2 ** (rng.integers(0, 12) / 12)
        third = 4 if rng.random() < 0.5 else 3
        chord = np.zeros(length)
        for semitones in (0, third, 7):
            f0 = root * 2 ** (semitones / 12)
            for harmonic in range(1, 4):
                if harmonic * f0 < sr / 2:
                    chord += np.sin(2 * np.pi * harmonic * f0 * t + rng.uniform(0, 2 * np.pi)) / harmonic
        swell = 0.6 + 0.4 * np.sin(2 * np.pi * t / max(seconds, 1e-3) + rng.uniform(0, 2 * np.pi))
        targets[i] = chord * swell
    # equal RMS per pair (so an even mix correlates equally with both), then a common gain that
    # keeps every peak at or below 0.9
    inputs /= np.sqrt((inputs ** 2).mean(axis=1, keepdims=True)) + 1e-8
    targets /= np.sqrt((targets ** 2).mean(axis=1, keepdims=True)) + 1e-8
    peak = np.maximum(np.abs(inputs).max(axis=1, keepdims=True), np.abs(targets).max(axis=1, keepdims=True))
    inputs *= 0.9 / peak
    targets *= 0.9 / peak
    return torch.from_numpy(inputs), torch.from_numpy(targets)
