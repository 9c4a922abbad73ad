"""Pairing and checking the audio files before packing (step 1 of :mod:`trainer.data.pack`).

Files are paired by relative path without extension between the two folders; every header is
read (readable, non-empty, channels, sample rates and lengths of each pair) and every problem is
collected, so a bad corpus is refused before anything is written, naming the first problem and
counting the rest.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

from trainer.core.log import get_logger
from trainer.data.format import DataError

DEFAULT_SPEAKER_PATTERN = r"^([^_]+)_"
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".aif", ".aiff")
MAX_LISTED = 5

log = get_logger("prepare")


@dataclass
class Pair:
    name: str
    speaker: str
    paths: tuple[str, str]
    stamps: tuple[tuple[int, int], tuple[int, int]]  # (size, mtime_ns) of both files
    source_rate: int
    num_frames: int  # at the source rate, after trimming a within-tolerance length difference
    out_samples: int  # at the target rate


@dataclass
class Settings:
    sample_rate: int
    signals: tuple[str, str]
    channel: int | None
    drop_silent: bool
    silence_threshold: float
    length_tolerance_ms: float
    kind: str = "paired"  # or speech, noise, rir (one signal per item: trainer.data.single)


def list_audio(folder: Path) -> dict[str, Path]:
    """Relative path without extension -> file, for every audio file under ``folder``."""
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder")
    found: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() not in AUDIO_SUFFIXES or path.name.startswith(".") or not path.is_file():
            continue
        key = path.relative_to(folder).with_suffix("").as_posix()
        if key in found:
            raise DataError(f"{path}: same name as {found[key]}; keep one of them")
        found[key] = path
    if not found:
        raise DataError(f"{folder}: no audio files ({', '.join(AUDIO_SUFFIXES)})")
    return found


def _header(path: Path, channel: int | None) -> tuple[int, int, str | None]:
    """(sample rate, frames, problem or None) from the file header."""
    try:
        info = sf.info(str(path))
    except Exception as exc:  # libsndfile raises several types for unreadable files
        return 0, 0, (f"{path}: unreadable audio ({str(exc).strip() or type(exc).__name__}); "
                      "re-export or remove the pair")
    if info.frames <= 0:
        return info.samplerate, 0, f"{path}: empty audio file (no samples); remove the pair"
    if info.channels > 1 and channel is None:
        return info.samplerate, info.frames, (f"{path}: {info.channels} channels; pass --channel N (0-based) "
                                              "to pick one, or downmix the corpus first")
    if channel is not None and channel >= info.channels:
        return info.samplerate, info.frames, f"{path}: --channel {channel} but the file has {info.channels} channel(s)"
    return info.samplerate, info.frames, None


def _check_pair(paths: tuple[Path, Path], settings: Settings) -> tuple[int, int, list[str]]:
    (rate_a, frames_a, err_a), (rate_b, frames_b, err_b) = (_header(p, settings.channel) for p in paths)
    problems = [e for e in (err_a, err_b) if e]
    if problems:
        return 0, 0, problems
    if rate_a != rate_b:
        return 0, 0, [f"{paths[1]}: sample rate {rate_b} Hz but its partner {paths[0]} has {rate_a} Hz; "
                      "resample one of them"]
    tolerance = int(round(settings.length_tolerance_ms * rate_a / 1000))
    if abs(frames_a - frames_b) > tolerance:
        return 0, 0, [f"{paths[1]}: {frames_b} samples but its partner {paths[0]} has {frames_a} "
                      f"(difference beyond --length-tolerance-ms {settings.length_tolerance_ms}); fix the pair"]
    return rate_a, min(frames_a, frames_b), []


def _resampled_length(frames: int, rate_in: int, rate_out: int) -> int:
    gcd = math.gcd(rate_in, rate_out)
    return math.ceil(frames * (rate_out // gcd) / (rate_in // gcd))


def raise_problems(problems: list[str]) -> None:
    if problems:
        more = f" (and {len(problems) - 1} more problem(s): {'; '.join(problems[1:1 + MAX_LISTED])})" \
            if len(problems) > 1 else ""
        raise DataError(problems[0] + more)


def scan(first_dir: Path, second_dir: Path, settings: Settings, speaker_pattern: str,
         need_speakers: bool, workers: int) -> list[Pair]:
    """Pair the files and check every header; raises DataError before anything is written."""
    from joblib import Parallel, delayed

    first, second = list_audio(first_dir), list_audio(second_dir)
    names_a, names_b = settings.signals[0], settings.signals[1]
    missing = [f"{first[k]}: no partner in the {names_b} folder {second_dir}" for k in first if k not in second]
    missing += [f"{second[k]}: no partner in the {names_a} folder {first_dir}" for k in second if k not in first]
    raise_problems(missing)
    pattern = re.compile(speaker_pattern)
    keys = sorted(first)
    checks = Parallel(n_jobs=min(workers, 8), prefer="threads")(
        delayed(_check_pair)((first[k], second[k]), settings) for k in keys)
    problems, pairs, unmatched = [], [], 0
    for key, (rate, frames, errs) in zip(keys, checks, strict=True):
        problems += errs
        match = pattern.search(Path(key).name)
        if match is None:
            if need_speakers:
                problems.append(f"{first[key]}: --speaker-pattern {speaker_pattern!r} does not match the name; "
                                "pass a pattern that does (its first group, or the whole match, is the speaker)")
            unmatched += 1
            speaker = ""
        else:
            speaker = match.group(1) if match.groups() else match.group(0)
        if errs:
            continue
        stamps = tuple((st.st_size, st.st_mtime_ns) for st in (first[key].stat(), second[key].stat()))
        pairs.append(Pair(key, speaker, (str(first[key]), str(second[key])), stamps, rate, frames,
                          _resampled_length(frames, rate, settings.sample_rate)))
    raise_problems(problems)
    if unmatched:
        log.warning("%d file name(s) do not match --speaker-pattern %r; their speaker is stored as ''",
                    unmatched, speaker_pattern)
    return pairs
