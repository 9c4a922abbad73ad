"""Single-signal corpora for on-the-fly mixing: ``python -m trainer.prepare --kind speech|noise|rir``.

A folder tree (any depth: the DNS-Challenge ``clean_fullband``, ``noise_fullband`` and
``impulse_responses`` trees work as they are) is packed into the sharded, checksummed,
resumable format of :mod:`trainer.data.format` with one signal per item (named after the kind);
each item's name is its file id (relative path without extension). Files are resampled once to
the target rate; multi-channel files need ``--channel``.

- ``speech``: the speaker is read from the file name (``--speaker-pattern``; DNS ``reader_NNNNN``,
  VCTK ``p226_...``). Held out by speaker (``--valid-speakers`` or ``--valid-fraction``), never by
  file, so validation speakers are never trained on. Mostly silent files (under
  :data:`MIN_ACTIVE_FRACTION` of 20 ms frames active) are counted and listed in the manifest,
  dropped with ``--drop-silent``.
- ``noise`` and ``rir``: held out by file (``--valid-fraction``). Silent files are always dropped
  (no gain brings them to an SNR). RIRs longer than ``--max-rir-seconds`` are refused by name;
  each RIR is trimmed at its onset (the direct path: its largest sample) and scaled so that the
  direct path is 1, so reverberant speech stays aligned with the dry speech and at its level.

The split is a pure function of the names (sorted by a hash of the speaker or file id), so a
re-run with more files moves few items between train and valid.
"""

from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path

import numpy as np

from trainer.core.log import get_logger
from trainer.data.format import SINGLE_KINDS, DataError
from trainer.data.scan import Pair, Settings, _header, _resampled_length, list_audio, raise_problems

SPEECH_SPEAKER_PATTERN = r"^(?:.*?(reader_\d+)|([^_]+)_)"  # DNS read speech, else the part before the first '_'
FRAME_SECONDS = 0.02
ACTIVE_DB = -40.0  # a frame is active when its RMS is within 40 dB of the loudest frame's
MIN_ACTIVE_FRACTION = 0.1

log = get_logger("prepare")


def condition(wave: np.ndarray, settings: Settings) -> np.ndarray:
    """RIRs: trimmed at the onset (the largest sample, the direct path) and scaled to a direct path of 1."""
    if settings.kind != "rir":
        return wave
    onset = int(np.argmax(np.abs(wave)))
    peak = float(wave[onset])
    return wave[onset:] / peak if peak != 0.0 else wave[onset:]


def active_fraction(wave: np.ndarray, sample_rate: int, floor: float) -> float:
    """Share of 20 ms frames whose RMS is above ``floor`` and within 40 dB of the loudest frame's."""
    size = max(1, int(FRAME_SECONDS * sample_rate))
    frames = wave[:len(wave) // size * size].reshape(-1, size) if len(wave) >= size else wave[None, :]
    rms = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1))
    loudest = float(rms.max())
    if loudest <= floor:
        return 0.0
    return float(np.mean(rms > max(floor, loudest * 10 ** (ACTIVE_DB / 20))))


def is_silent(wave: np.ndarray, settings: Settings) -> bool:
    """Speech: mostly silent (under MIN_ACTIVE_FRACTION active frames); noise/RIR: no sample above the threshold."""
    if settings.kind == "speech":
        return active_fraction(wave, settings.sample_rate, settings.silence_threshold) < MIN_ACTIVE_FRACTION
    return float(np.max(np.abs(wave))) < settings.silence_threshold


def speaker_of(key: str, pattern: re.Pattern) -> str | None:
    match = pattern.search(Path(key).name)
    if match is None:
        return None
    groups = [g for g in match.groups() if g]
    return groups[0] if groups else match.group(0)


def scan_single(folder: Path, settings: Settings, speaker_pattern: str, need_speakers: bool,
                max_seconds: float | None) -> list[Pair]:
    """Every audio file under ``folder`` as a one-signal item; every header checked before packing."""
    files = list_audio(folder)
    pattern = re.compile(speaker_pattern)
    problems, items = [], []
    for key, path in files.items():
        rate, frames, problem = _header(path, settings.channel)
        if problem is None and max_seconds is not None and frames > max_seconds * rate:
            problem = (f"{path}: {frames / rate:.2f} s, longer than --max-rir-seconds {max_seconds}; "
                       "trim it, raise the limit, or remove it")
        speaker = speaker_of(key, pattern) if settings.kind == "speech" else ""
        if speaker is None:
            if need_speakers:
                problem = problem or (f"{path}: --speaker-pattern {speaker_pattern!r} does not match the name; pass "
                                      "a pattern that does (its first group, or the whole match, is the speaker)")
            speaker = ""
        if problem:
            problems.append(problem)
            continue
        stat = path.stat()
        items.append(Pair(key, speaker, (str(path),), ((stat.st_size, stat.st_mtime_ns),), rate, frames,
                          _resampled_length(frames, rate, settings.sample_rate)))
    raise_problems(problems)
    return items


def _hash_order(names: list[str]) -> list[str]:
    return sorted(names, key=lambda n: hashlib.sha256(n.encode()).hexdigest())


def held_out(items: list[Pair], kind: str, valid_speakers: list[str], valid_fraction: float, where: Path) -> set[str]:
    """Names of the items held out for validation (by speaker for speech, by file otherwise)."""
    if kind == "speech":
        found = sorted({p.speaker for p in items})
        if valid_speakers:
            unknown = [s for s in valid_speakers if s not in found]
            if unknown:
                raise DataError(f"--valid-speakers: no files for speaker {unknown[0]!r} in {where} (speakers "
                                f"found: {', '.join(found[:20])}{' ...' if len(found) > 20 else ''})")
            chosen = set(valid_speakers)
        else:
            count = max(1, math.floor(valid_fraction * len(found) + 0.5))
            if count >= len(found):
                raise DataError(f"--valid-fraction {valid_fraction}: {len(found)} speaker(s) in {where}, too few to "
                                "hold any out and keep one for training; add speakers or lower the fraction")
            chosen = set(_hash_order(found)[:count])
        return {p.name for p in items if p.speaker in chosen}
    names = [p.name for p in items]
    count = max(1, math.floor(valid_fraction * len(names) + 0.5))
    if count >= len(names):
        raise DataError(f"--valid-fraction {valid_fraction}: {len(names)} {kind} file(s) in {where}, too few to hold "
                        "any out and keep one for training; add files or lower the fraction")
    return set(_hash_order(names)[:count])


def prepare_single(kind: str, in_dir: str | Path, out: str | Path, *, sample_rate: int = 16000,
                   shard_size_mb: float = 256, valid_speakers: list[str] | tuple[str, ...] = (),
                   valid_fraction: float = 0.0, speaker_pattern: str = SPEECH_SPEAKER_PATTERN, workers: int = 1,
                   channel: int | None = None, drop_silent: bool = False, silence_threshold: float = 1e-4,
                   max_rir_seconds: float = 4.0, progress: bool = True) -> dict[str, dict]:
    """Pack one corpus; ``{"train", "valid"}`` manifests (OUT/train, OUT/valid) when something is
    held out, else ``{"all": manifest}`` written to OUT."""
    from trainer.data.pack import pack_split

    in_dir, out = Path(in_dir), Path(out)
    if kind not in SINGLE_KINDS:
        raise DataError(f"--kind {kind!r}: not one of {', '.join(SINGLE_KINDS)}")
    if valid_speakers and kind != "speech":
        raise DataError(f"--valid-speakers: only for --kind speech; hold {kind} files out with --valid-fraction")
    if valid_speakers and valid_fraction:
        raise DataError("give --valid-speakers or --valid-fraction, not both")
    if not 0.0 <= valid_fraction < 1.0 or not math.isfinite(valid_fraction):
        raise DataError(f"--valid-fraction {valid_fraction}: must be in [0, 1)")
    if sample_rate < 1000 or shard_size_mb <= 0 or workers < 1 or (channel is not None and channel < 0) \
            or not max_rir_seconds > 0:
        raise DataError(f"invalid settings: sample_rate={sample_rate}, shard_size_mb={shard_size_mb}, "
                        f"workers={workers}, channel={channel}, max_rir_seconds={max_rir_seconds}")
    try:
        re.compile(speaker_pattern)
    except re.error as exc:
        raise DataError(f"--speaker-pattern {speaker_pattern!r}: not a regular expression ({exc})") from None
    drop = drop_silent or kind != "speech"  # silent noise or RIRs cannot be used at all
    settings = Settings(sample_rate, (kind,), channel, drop, silence_threshold, 0.0, kind=kind)
    splitting = bool(valid_speakers) or valid_fraction > 0
    items = scan_single(in_dir, settings, speaker_pattern, splitting and kind == "speech",
                        max_rir_seconds if kind == "rir" else None)
    common = dict(shard_size_mb=shard_size_mb, workers=workers, sources={kind: str(in_dir.resolve())},
                  progress=progress)
    if not splitting:
        return {"all": pack_split(out, items, settings, split=None, **common)}
    valid = held_out(items, kind, list(valid_speakers), valid_fraction, in_dir)
    return {"train": pack_split(out / "train", [p for p in items if p.name not in valid], settings,
                                split="train", **common),
            "valid": pack_split(out / "valid", [p for p in items if p.name in valid], settings,
                                split="valid", **common)}
