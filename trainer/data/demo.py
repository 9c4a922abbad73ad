"""The built-in demo corpus: small, made once on this machine, no download.

``ensure_demo_corpus()`` speaks the sentences of :mod:`trainer.data.synth` with its voices
(espeak-ng; the speech-like generator when espeak-ng is absent), adds coloured noise at SNRs
between 0 and 15 dB, and packs a speaker-held-out split with :func:`trainer.data.pack.prepare`:
4 voices x 10 sentences for ``train``, 1 voice x 8 sentences x 8 takes (pitch, noise and SNR drawn
anew for each take) = 64 utterances for ``valid`` (enough for the per-epoch correlation between the
discriminator's output and the true PESQ to mean something), and 1 more voice x 8 as a wav test set
(``test/clean``, ``test/noisy``). The voice is the speaker (file names
``<voice>_<nn>.wav``). It is built in a temporary folder and renamed into place when complete,
so an interrupted build leaves nothing half-made and concurrent ranks agree on one copy.

``ensure_creative_demo_corpus()`` does the same for the creative-agent variant with synthetic
(input, target) pairs: click tracks and chords (:func:`trainer.data.synth.synthetic_pairs`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from trainer.core.log import get_logger
from trainer.core.registry import resolve, task_spec
from trainer.data.format import DataError
from trainer.data.synth import (
    SENTENCES,
    VOICES,
    babble_like_noise,
    have_espeak,
    mix_at_snr,
    synthesize_speech,
)

DEMO_VERSION = 2  # speech corpus; 2: 64 validation utterances (was 8)
CREATIVE_DEMO_VERSION = 1
MARKER = "corpus.json"
NUM_TRAIN_VOICES, NUM_TRAIN_SENTENCES, NUM_HELDOUT_SENTENCES = 4, 10, 8
NUM_VALID_TAKES = 8  # validation: each held-out sentence spoken 8 times, each with its own noise and SNR
MAX_SENTENCE_CHARS = 60  # longer sentences take over 4 s at the demo speaking rate
NUM_CREATIVE_TRAIN, NUM_CREATIVE_VALID, CREATIVE_SECONDS = 24, 6, 2.0

log = get_logger("demo")


def demo_paths(root: str | Path) -> dict[str, str]:
    root = Path(root)
    return {"root": str(root), "train": str(root / "train"), "valid": str(root / "valid"),
            "test_clean": str(root / "test" / "clean"), "test_noisy": str(root / "test" / "noisy")}


def write_pairs(folder: Path, voice: str, sentences: list[str] | tuple[str, ...], sample_rate: int, seed: int,
                *, speaker: str | None = None, subtype: str = "PCM_16") -> list[str]:
    """Speak ``sentences`` and write ``folder/clean/<speaker>_<nn>.wav`` and the noisy partner
    (noise at a random SNR in [0, 15] dB). Returns the file names (also used by the tests)."""
    rng = np.random.default_rng(seed)
    names = []
    for i, text in enumerate(sentences):
        clean = synthesize_speech(text, sample_rate, voice=voice, speed=165, pitch=int(rng.integers(35, 70)),
                                  seed=seed * 100 + i)
        noise = babble_like_noise(len(clean), sample_rate, seed=seed * 100 + i)
        noisy = mix_at_snr(clean, noise, float(rng.uniform(0.0, 15.0)))
        gain = min(1.0, 0.9 / float(np.max(np.abs(noisy))))  # no clipping in 16-bit wav; same gain keeps the pair
        name = f"{speaker or voice}_{i:02d}.wav"
        for kind, wave in (("clean", clean * gain), ("noisy", noisy * gain)):
            (folder / kind).mkdir(parents=True, exist_ok=True)
            sf.write(folder / kind / name, wave, sample_rate, subtype=subtype)
        names.append(name)
    return names


def build_demo_corpus(root: Path, sample_rate: int) -> None:
    """Build into ``root`` (which must not exist yet)."""
    from trainer.data.pack import prepare

    sentences = [s for s in SENTENCES if len(s) <= MAX_SENTENCE_CHARS]
    train_voices, valid_voice, test_voice = VOICES[:NUM_TRAIN_VOICES], VOICES[NUM_TRAIN_VOICES], VOICES[-1]
    wav = root / "wav"
    for seed, voice in enumerate(train_voices):
        write_pairs(wav, voice, sentences[:NUM_TRAIN_SENTENCES], sample_rate, seed)
    write_pairs(wav, valid_voice, sentences[-NUM_HELDOUT_SENTENCES:] * NUM_VALID_TAKES, sample_rate, len(VOICES))
    write_pairs(root / "test", test_voice, sentences[:NUM_HELDOUT_SENTENCES], sample_rate, len(VOICES) + 1)
    prepare(wav / "clean", wav / "noisy", root, sample_rate=sample_rate, shard_size_mb=2,
            valid_speakers=[valid_voice], workers=1, progress=False)
    shutil.rmtree(wav)
    info = {"demo_version": DEMO_VERSION, "sample_rate": sample_rate,
            "speech": "espeak-ng" if have_espeak() else "speech-like generator (espeak-ng not installed)",
            "train_voices": list(train_voices), "valid_voice": valid_voice, "test_voice": test_voice}
    (root / MARKER).write_text(json.dumps(info, indent=1) + "\n")


def write_creative_pairs(folder: Path, num: int, seconds: float, sample_rate: int, seed: int,
                         speaker: str) -> list[str]:
    """Synthetic (input, target) pieces (:func:`trainer.data.synth.synthetic_pairs`: a click track and
    a chord) as ``folder/{input,target}/<speaker>_<nnn>.wav``; returns the file names."""
    from trainer.data.synth import synthetic_pairs

    inputs, targets = synthetic_pairs(num, seconds, sample_rate, seed=seed)
    names = [f"{speaker}_{k:03d}.wav" for k in range(num)]
    for kind, waves in (("input", inputs), ("target", targets)):
        (folder / kind).mkdir(parents=True, exist_ok=True)
        for name, wave in zip(names, waves, strict=True):
            sf.write(folder / kind / name, wave.numpy(), sample_rate, subtype="FLOAT")
    return names


def build_creative_demo_corpus(root: Path, sample_rate: int) -> None:
    """24 training and 6 held-out synthetic pairs of 2 s for the creative-agent variant."""
    from trainer.data.pack import prepare

    wav = root / "wav"
    write_creative_pairs(wav, NUM_CREATIVE_TRAIN, CREATIVE_SECONDS, sample_rate, 0, "train")
    write_creative_pairs(wav, NUM_CREATIVE_VALID, CREATIVE_SECONDS, sample_rate, 1, "valid")
    prepare(wav / "target", wav / "input", root, signals=("target", "input"), sample_rate=sample_rate,
            shard_size_mb=2, valid_speakers=["valid"], workers=1, progress=False)
    shutil.rmtree(wav)
    info = {"demo_version": CREATIVE_DEMO_VERSION, "sample_rate": sample_rate,
            "pieces": "synthetic click tracks (input) and chords (target)"}
    (root / MARKER).write_text(json.dumps(info, indent=1) + "\n")


def _retire(root: Path, old_version: int) -> None:
    """Move an older demo corpus out of the way (atomically; a concurrent caller may win) and delete it."""
    aside = root.with_name(f".{root.name}.v{old_version}.{os.getpid()}.old")
    try:
        os.rename(root, aside)
    except FileNotFoundError:
        return
    log.info("%s was demo corpus version %d: rebuilding it", root, old_version)
    shutil.rmtree(aside, ignore_errors=True)


def _ensure(root: Path, sample_rate: int, build, what: str, version: int) -> dict[str, str]:
    """Build once (idempotent, atomic: a temporary folder renamed into place); returns the paths."""
    marker = root / MARKER
    if marker.is_file():
        info = json.loads(marker.read_text())
        if info.get("demo_version") == version and info.get("sample_rate") == sample_rate:
            return demo_paths(root)
        if info.get("sample_rate") != sample_rate:
            raise DataError(f"data.sample_rate={sample_rate}: the demo corpus in {root} is built at "
                            f"{info.get('sample_rate')} Hz (shared by every demo run); drop the --set "
                            f"data.sample_rate, or pack your own data at {sample_rate} Hz (python -m trainer.prepare) "
                            "and give data.train_dir and data.valid_dir")
        if not isinstance(info.get("demo_version"), int) or info["demo_version"] > version:
            raise DataError(f"{root}: a demo corpus of version {info.get('demo_version')!r}, not one this code "
                            f"(version {version}) can read or rebuild; delete the folder to rebuild it")
        _retire(root, info["demo_version"])  # an older version of our own cache: rebuild it
    root.parent.mkdir(parents=True, exist_ok=True)
    log.info("building the %s in %s", what, root)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    tmp.chmod(0o755)
    try:
        build(tmp, sample_rate)
        try:
            os.rename(tmp, root)
        except OSError:
            if not marker.is_file():  # not a concurrent builder that finished first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return demo_paths(root)


def ensure_demo_corpus(root: str | Path = "logs/demo_corpus", sample_rate: int = 16000) -> dict[str, str]:
    """The speech demo corpus (built once); returns its paths (train, valid, test_clean, test_noisy)."""
    speech = "espeak-ng" if have_espeak() else "the speech-like generator (espeak-ng is not installed)"
    return _ensure(Path(root), sample_rate, build_demo_corpus, f"demo corpus with speech from {speech}",
                   DEMO_VERSION)


def ensure_creative_demo_corpus(root: str | Path = "logs/demo_creative", sample_rate: int = 16000) -> dict[str, str]:
    """The creative variant's demo pairs (built once); returns its paths (train, valid)."""
    return _ensure(Path(root), sample_rate, build_creative_demo_corpus, "creative demo pairs",
                   CREATIVE_DEMO_VERSION)


def demo_for(cfg) -> dict[str, str]:
    """The demo corpus of ``cfg.task`` (its ``TaskSpec.demo``) at ``cfg.data.sample_rate``, built on
    first use (atomically: concurrent ranks may both build; one rename wins)."""
    return resolve(task_spec(cfg.task).demo)(sample_rate=cfg.data.sample_rate)
