"""The built-in demo corpora for on-the-fly mixing (``mixing.demo: true``): speech, noise and RIRs.

:func:`write_dns_tree` writes a small tree in the DNS-Challenge layout (``clean_fullband/read_speech``
with ``reader_NNNNN`` speakers, ``noise_fullband``, ``impulse_responses/SLR26/...``); the demo
packs it with ``prepare --kind`` exactly as a user packs the real one. Speech: the demo sentences
spoken by espeak-ng voices (one voice per reader; the speech-like generator without espeak-ng).
Noise: coloured noises, modulated babble-like noise and hums. RIRs: simulated as exponentially
decaying noise (T60 0.2-0.8 s) after a direct path and two early reflections (no room simulator
needed). Built once under ``logs/demo_mixing`` (atomically, like the paired demo corpus).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf

from trainer.data.synth import SENTENCES, VOICES, babble_like_noise, have_espeak, synthesize_speech

MIXING_DEMO_VERSION = 1
SPEECH_DIR, NOISE_DIR, RIR_DIR = "clean_fullband/read_speech", "noise_fullband", "impulse_responses/SLR26/simulated"
MAX_SENTENCE_CHARS = 60


def reader(speaker: int) -> str:
    return f"reader_{speaker:05d}"


def write_speech(root: Path, sample_rate: int, num_speakers: int, per_speaker: int, seed: int = 0) -> None:
    sentences = [s for s in SENTENCES if len(s) <= MAX_SENTENCE_CHARS]
    folder = root / SPEECH_DIR
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for speaker in range(num_speakers):
        voice = VOICES[speaker % len(VOICES)]
        for k in range(per_speaker):
            text = sentences[(speaker * per_speaker + k) % len(sentences)]
            wave = synthesize_speech(text, sample_rate, voice=voice, speed=165, pitch=int(rng.integers(35, 70)),
                                     seed=seed * 1000 + speaker * 100 + k)
            wave = 0.5 * wave / max(1e-6, float(np.max(np.abs(wave))))
            sf.write(folder / f"book_{k:05d}_chp_0001_{reader(speaker)}_{k}_seg_1.wav", wave, sample_rate,
                     subtype="PCM_16")


def noise_wave(k: int, num: int, sample_rate: int, rng: np.random.Generator) -> tuple[str, np.ndarray]:
    kind = ("white", "pink", "brown", "babble", "hum")[k % 5]
    white = rng.standard_normal(num)
    if kind == "pink":
        spectrum = np.fft.rfft(white) / np.sqrt(np.arange(1, num // 2 + 2))
        wave = np.fft.irfft(spectrum, n=num)
    elif kind == "brown":
        wave = np.cumsum(white)
        wave -= np.convolve(wave, np.ones(400) / 400, mode="same")
    elif kind == "babble":
        wave = babble_like_noise(num, sample_rate, seed=int(rng.integers(1 << 30)))
    elif kind == "hum":
        t = np.arange(num) / sample_rate
        f0 = float(rng.uniform(50, 120))
        wave = sum(np.sin(2 * np.pi * f0 * h * t + rng.random() * 6) / h for h in range(1, 6)) + 0.05 * white
    else:
        wave = white
    return kind, 0.3 * wave / max(1e-9, float(np.max(np.abs(wave))))


def write_noise(root: Path, sample_rate: int, count: int, seed: int = 0) -> None:
    folder = root / NOISE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed + 1)
    for k in range(count):
        seconds = float(rng.uniform(0.6, 3.0))  # some shorter than a 1-2 s crop: looped
        kind, wave = noise_wave(k, int(seconds * sample_rate), sample_rate, rng)
        sf.write(folder / f"{kind}_{k:03d}.wav", wave.astype(np.float32), sample_rate, subtype="PCM_16")


def simulated_rir(sample_rate: int, rng: np.random.Generator, seconds: float = 0.5) -> np.ndarray:
    """Direct path after a short delay, two early reflections, then exponentially decaying noise."""
    num = int(seconds * sample_rate)
    t60 = float(rng.uniform(0.2, 0.8))
    delay = int(rng.integers(5, 40))
    h = np.zeros(num)
    t = np.arange(num) / sample_rate
    tail_start = delay + int(0.005 * sample_rate)
    h[tail_start:] = 0.3 * rng.standard_normal(num - tail_start) * np.exp(-6.9 * t[:num - tail_start] / t60)
    h[delay] = 1.0
    for _ in range(2):
        h[delay + int(rng.integers(int(0.002 * sample_rate), int(0.02 * sample_rate)))] += float(rng.uniform(0.3, 0.6))
    return h


def write_rirs(root: Path, sample_rate: int, count: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed + 2)
    for k in range(count):
        folder = root / RIR_DIR / f"Room{k // 4 + 1:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        h = simulated_rir(sample_rate, rng)
        sf.write(folder / f"Room{k // 4 + 1:03d}-{k % 4 + 1:05d}.wav", (0.5 * h).astype(np.float32), sample_rate,
                 subtype="FLOAT")


def write_dns_tree(root: str | Path, sample_rate: int = 16000, *, num_speakers: int = 6, per_speaker: int = 8,
                   num_noises: int = 16, num_rirs: int = 8, seed: int = 0) -> Path:
    """A DNS-Challenge-like tree under ``root``; returns ``root``."""
    root = Path(root)
    write_speech(root, sample_rate, num_speakers, per_speaker, seed)
    write_noise(root, sample_rate, num_noises, seed)
    write_rirs(root, sample_rate, num_rirs, seed)
    return root


def build_mixing_demo(root: Path, sample_rate: int) -> None:
    """The tree packed as three corpora (root/speech, root/noise, root/rir), each with train/ and valid/."""
    import shutil

    from trainer.data.single import prepare_single

    tree = write_dns_tree(root / "dns", sample_rate)
    prepare_single("speech", tree / "clean_fullband", root / "speech", sample_rate=sample_rate, shard_size_mb=4,
                   valid_speakers=[reader(5)], progress=False)
    prepare_single("noise", tree / "noise_fullband", root / "noise", sample_rate=sample_rate, shard_size_mb=4,
                   valid_fraction=0.25, progress=False)
    prepare_single("rir", tree / "impulse_responses", root / "rir", sample_rate=sample_rate, shard_size_mb=4,
                   valid_fraction=0.25, progress=False)
    shutil.rmtree(tree)
    info = {"demo_version": MIXING_DEMO_VERSION, "sample_rate": sample_rate,
            "speech": "espeak-ng" if have_espeak() else "speech-like generator (espeak-ng not installed)"}
    (root / "corpus.json").write_text(json.dumps(info, indent=1) + "\n")


def ensure_mixing_demo(root: str | Path = "logs/demo_mixing", sample_rate: int = 16000) -> dict[str, str]:
    """The demo corpora (built once); returns {speech, noise, rir} folders."""
    from trainer.data.demo import _ensure

    root = Path(root)
    _ensure(root, sample_rate, build_mixing_demo, "mixing demo corpora", MIXING_DEMO_VERSION)
    return {kind: str(root / kind) for kind in ("speech", "noise", "rir")}
