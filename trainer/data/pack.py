"""Pack paired audio folders into HDF5 shards plus a manifest (the engine of ``python -m trainer.prepare``).

Pairs are matched by file name (relative path without extension) between the two folders:
``--clean-dir``/``--noisy-dir`` for speech enhancement, ``--target-dir``/``--input-dir`` for the
creative variant. The manifest's ``signals`` lists the two names: ``signals[0]`` is the
reference (clean/target), ``signals[1]`` the model input (noisy/input).

The shard layout is described in :mod:`trainer.data.format`.

How it runs: (1) every file's header is checked (:mod:`trainer.data.scan`: readable, non-empty, channels, sample rates
and lengths of each pair) before anything is written; (2) shards are packed in parallel, each
into a temporary file that is renamed, when complete, to a hidden *staged* name carrying its
sha256 (``.shard-00000.h5.<sha256>.staged``); (3) once every shard is ready, the old manifest is
removed, the staged shards are renamed into place and ``manifest.json`` (sizes and sha256 of
every shard) is written, atomically. Without a manifest a folder is not a dataset.

Re-running: a shard whose plan hash (file names, sizes, mtimes, settings) is unchanged is reused
only after its sha256 matches the one recorded for it (in the existing manifest, or in its staged
name), so a corrupted shard is repacked, never laundered into a new manifest; a shard without a
recorded checksum is repacked. A re-run that fails (bad input) changes neither the old manifest
nor the old shards: the previous dataset stays usable, and the shards it did pack are kept staged
for the next run.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import h5py
import numpy as np
import soundfile as sf

from trainer.core.io import atomic_write_text
from trainer.core.log import get_logger
from trainer.data.format import (
    CHUNK_SAMPLES,
    FORMAT_VERSION,
    MANIFEST,
    PAIRED,
    DataError,
    check_manifest,
    sha256_file,
)
from trainer.data.scan import DEFAULT_SPEAKER_PATTERN, MAX_LISTED, Pair, Settings, raise_problems, scan

log = get_logger("prepare")


def plan_shards(pairs: list[Pair], shard_bytes: int) -> list[list[Pair]]:
    """Greedy, deterministic: consecutive pairs (sorted by name) until a shard reaches shard_bytes."""
    shards: list[list[Pair]] = [[]]
    size = 0
    for pair in pairs:
        if shards[-1] and size >= shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(pair)
        size += len(pair.paths) * 4 * pair.out_samples
    return shards


def _plan_hash(pairs: list[Pair], settings: Settings) -> str:
    text = json.dumps([FORMAT_VERSION, vars(settings), [(p.name, p.speaker, p.paths, p.stamps) for p in pairs]],
                      default=list)
    return hashlib.sha256(text.encode()).hexdigest()


def load_pair(pair: Pair, settings: Settings) -> tuple[np.ndarray, ...]:
    """Every signal of the item (both of a pair) as float32 at the target rate, aligned and of equal
    length; single-signal kinds then go through their own conditioning (RIRs: onset and level)."""
    waves = []
    for path in pair.paths:
        try:
            wave, _ = sf.read(path, dtype="float32", always_2d=True, frames=pair.num_frames)
        except Exception as exc:
            raise DataError(f"{path}: unreadable audio ({exc}); re-export or remove the pair") from None
        waves.append(wave[:, settings.channel or 0])
    stacked = np.stack(waves)
    if pair.source_rate != settings.sample_rate:
        import torch
        import torchaudio.functional as taf

        stacked = taf.resample(torch.from_numpy(stacked), pair.source_rate, settings.sample_rate).numpy()
    if settings.kind != PAIRED:
        from trainer.data.single import condition

        return (condition(stacked[0], settings),)
    return tuple(stacked)


def _is_silent(waves: tuple[np.ndarray, ...], settings: Settings) -> bool:
    if settings.kind == PAIRED:
        return min(float(np.max(np.abs(w))) for w in waves) < settings.silence_threshold
    from trainer.data.single import is_silent

    return is_silent(waves[0], settings)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _shard_summary(path: Path, name: str) -> dict:
    with h5py.File(path, "r") as h5:
        summary = {"file": name, "num_pairs": int(h5.attrs["num_pairs"]),
                   "num_samples": int(h5.attrs["num_samples"]),
                   "silent": json.loads(h5.attrs["silent"]), "dropped": json.loads(h5.attrs["dropped"]),
                   "speakers": [s.decode() for s in h5["speakers"][:]]}
    summary["num_bytes"] = path.stat().st_size
    summary["sha256"] = sha256_file(path)
    return summary


STAGED_SUFFIX = ".staged"


def _staged_path(path: Path, digest: str) -> Path:
    return path.with_name(f".{path.name}.{digest}{STAGED_SUFFIX}")


def pack_shard(path: Path, pairs: list[Pair], settings: Settings, plan: str) -> tuple[dict | None, list[str]]:
    """Write the shard for ``path`` (temp name, fsync, rename to its staged name, which carries its
    sha256; :func:`pack_split` moves it into place). Returns (summary, problems)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    problems, silent, dropped = [], [], []
    names, speakers, lengths = [], [], []
    try:
        with h5py.File(tmp, "w") as h5:
            data = {s: h5.create_dataset(s, shape=(0,), maxshape=(None,), dtype="float32",
                                         chunks=(CHUNK_SAMPLES,), fletcher32=True) for s in settings.signals}
            total = 0
            for pair in pairs:
                try:
                    waves = load_pair(pair, settings)
                except DataError as exc:
                    problems.append(str(exc))
                    continue
                bad = [(p, np.flatnonzero(~np.isfinite(w))) for p, w in zip(pair.paths, waves, strict=True)]
                bad = [(p, idx) for p, idx in bad if len(idx)]
                if bad:
                    p, idx = bad[0]
                    problems.append(f"{p}: {len(idx)} NaN/Inf sample(s), first at sample {idx[0]}; "
                                    "fix or remove the pair")
                    continue
                if _is_silent(waves, settings):
                    silent.append(pair.name)
                    if settings.drop_silent:
                        dropped.append(pair.name)
                        continue
                if problems:
                    continue  # the shard will not be kept; only collect further problems
                n = len(waves[0])
                for signal, wave in zip(settings.signals, waves, strict=True):
                    data[signal].resize((total + n,))
                    data[signal][total:total + n] = wave
                total += n
                names.append(pair.name)
                speakers.append(pair.speaker)
                lengths.append(n)
            if problems:
                raise DataError(problems[0])
            h5.create_dataset("lengths", data=np.asarray(lengths, dtype=np.int64))
            h5.create_dataset("offsets", data=np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]))
            h5.create_dataset("names", data=names, dtype=h5py.string_dtype())
            h5.create_dataset("speakers", data=speakers, dtype=h5py.string_dtype())
            h5.attrs.update(format_version=FORMAT_VERSION, sample_rate=settings.sample_rate, plan=plan,
                            signals=json.dumps(list(settings.signals)), num_pairs=len(names),
                            num_samples=total, silent=json.dumps(silent), dropped=json.dumps(dropped))
        _fsync(tmp)
        summary = _shard_summary(tmp, path.name)
        staged = _staged_path(path, summary["sha256"])
        os.replace(tmp, staged)
    except DataError:
        tmp.unlink(missing_ok=True)
        return None, problems
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    summary["staged"] = str(staged)
    return summary, []


def _pack_job(i: int, *args) -> tuple[int, tuple[dict | None, list[str]]]:
    return i, pack_shard(*args)


def _complete_shard(path: Path, plan: str) -> bool:
    if not path.is_file():
        return False
    try:
        with h5py.File(path, "r") as h5:
            return h5.attrs.get("plan") == plan and h5.attrs.get("format_version") == FORMAT_VERSION
    except Exception:  # h5py raises several types for damaged files
        return False


def _verified_summary(path: Path, name: str, plan: str, recorded: dict | None) -> dict | None:
    """The summary of an existing shard file when it is complete for ``plan`` and matches the
    sha256 and size recorded for it; None (logged when it is damaged) otherwise."""
    if recorded is None or not _complete_shard(path, plan):
        return None
    try:
        summary = _shard_summary(path, name)
    except Exception:
        summary = None
    if summary is None or summary["sha256"] != recorded.get("sha256") or summary["num_bytes"] != recorded.get(
            "num_bytes"):
        log.warning("%s: does not match its sha256 in %s (corrupted or modified since it was packed); "
                    "repacking it", path, recorded.get("where", MANIFEST))
        return None
    return summary


def _recorded_shards(out: Path) -> dict[str, dict]:
    """Per shard file, the entry of the existing manifest (empty if there is no valid one)."""
    path = out / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        check_manifest(manifest, path)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, DataError) as exc:
        log.warning("%s: ignored (%s); every shard is checked or repacked", path, str(exc).splitlines()[0][:200])
        return {}
    return {entry["file"]: entry for entry in manifest["shards"]}


def _reuse(out: Path, i: int, plan: str, recorded: dict[str, dict]) -> dict | None:
    """A verified summary for shard ``i``: the shard in place, else one staged by an earlier run."""
    path = out / f"shard-{i:05d}.h5"
    summary = _verified_summary(path, path.name, plan, recorded.get(path.name))
    if summary is not None:
        return summary
    for staged in sorted(out.glob(f".{path.name}.*{STAGED_SUFFIX}")):
        digest = staged.name[len(path.name) + 2:-len(STAGED_SUFFIX)]
        summary = _verified_summary(staged, path.name, plan, {"sha256": digest, "num_bytes": staged.stat().st_size,
                                                              "where": "its staged name"})
        if summary is not None:
            return summary | {"staged": str(staged)}
    return None


def _commit(out: Path, summaries: dict[int, dict]) -> None:
    """Move the staged shards into place (the old manifest goes first: the folder is not a dataset
    until the new manifest is written)."""
    staged = {i: Path(s.pop("staged")) for i, s in summaries.items() if "staged" in s}
    if staged:
        (out / MANIFEST).unlink(missing_ok=True)
    for i, path in staged.items():
        os.replace(path, out / f"shard-{i:05d}.h5")


def pack_split(out: Path, pairs: list[Pair], settings: Settings, *, split: str | None, shard_size_mb: float,
               workers: int, sources: dict, progress: bool, manifest_extra: dict | None = None) -> dict:
    """Pack ``pairs`` into ``out``; returns the manifest (also written to out/manifest.json)."""
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(".shard-*.tmp"):  # left by a crashed run
        stale.unlink()
    shards = plan_shards(pairs, int(shard_size_mb * 2**20))
    summaries = _pack_shards(out, shards, settings, workers=workers, label=split or out.name, progress=progress)
    _commit(out, summaries)
    ordered = [summaries[i] for i in range(len(shards))]
    manifest = _manifest(ordered, settings, split=split, sources=sources, extra=manifest_extra)
    silent = manifest["silent"]
    if silent:
        listed = ", ".join(silent[:MAX_LISTED]) + (f" (+{len(silent) - MAX_LISTED} more)"
                                                   if len(silent) > MAX_LISTED else "")
        log.warning("%s: %d silent %s %s: %s (full list in manifest.json)", out, len(silent),
                    "pair(s)" if settings.kind == PAIRED else f"{settings.kind} file(s)",
                    "dropped" if settings.drop_silent else "kept (pass --drop-silent to drop them)", listed)
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    for extra in out.glob("shard-*.h5"):  # from an earlier run with a different plan
        if extra.name not in {s["file"] for s in ordered}:
            extra.unlink()
    for extra in out.glob(f".shard-*{STAGED_SUFFIX}"):  # staged by a failed run, not used after all
        extra.unlink()
    log.info("%s: %d %s, %.1f s of audio in %d shard(s)", out, manifest["num_pairs"],
             "pairs" if settings.kind == PAIRED else f"{settings.kind} items",
             manifest["total_seconds"], len(ordered))
    return manifest


def _pack_shards(out: Path, shards: list, settings: Settings, *, workers: int, label: str,
                 progress: bool) -> dict[int, dict]:
    """Each planned shard's summary by index: reused when the folder already holds it complete, else
    packed (staged, not yet in place). Raises on any problem, before anything is moved."""
    from joblib import Parallel, delayed
    from tqdm import tqdm

    recorded = _recorded_shards(out)
    jobs, summaries = [], {}
    for i, shard_pairs in enumerate(shards):
        path, plan = out / f"shard-{i:05d}.h5", _plan_hash(shard_pairs, settings)
        summary = _reuse(out, i, plan, recorded)
        if summary is not None:
            summaries[i] = summary
        else:
            jobs.append((i, path, shard_pairs, plan))
    if summaries:
        log.info("%s: %d of %d shard(s) already complete, skipped", out, len(summaries), len(shards))
    problems = []
    results = Parallel(n_jobs=max(1, min(workers, len(jobs))), return_as="generator_unordered")(
        delayed(_pack_job)(i, path, p, settings, plan) for i, path, p, plan in jobs)
    for i, (summary, shard_problems) in tqdm(results, total=len(jobs), desc=f"packing {label}",
                                             unit="shard", disable=not progress or not jobs):
        problems += shard_problems
        if summary is not None:
            summaries[i] = summary
    raise_problems(problems)  # before anything is moved: the old dataset stays as it was
    return summaries


def _manifest(ordered: list[dict], settings: Settings, *, split: str | None, sources: dict,
              extra: dict | None) -> dict:
    """manifest.json's content from the shards' summaries (in order; their per-shard lists are moved
    into the manifest's totals)."""
    speakers: dict[str, int] = {}
    for summary in ordered:
        for speaker in summary.pop("speakers"):
            speakers[speaker] = speakers.get(speaker, 0) + 1
    silent = sorted(n for s in ordered for n in s.pop("silent"))
    dropped = sorted(n for s in ordered for n in s.pop("dropped"))
    for summary in ordered:
        summary["seconds"] = round(summary["num_samples"] / settings.sample_rate, 3)
    return {
        "format_version": FORMAT_VERSION, "kind": settings.kind, "split": split, "sample_rate": settings.sample_rate,
        "signals": list(settings.signals), "num_pairs": sum(s["num_pairs"] for s in ordered),
        "total_seconds": round(sum(s["num_samples"] for s in ordered) / settings.sample_rate, 3),
        "num_shards": len(ordered), "speakers": dict(sorted(speakers.items())),
        "silent": silent, "dropped_silent": dropped, "sources": sources,
        "settings": {"channel": settings.channel, "drop_silent": settings.drop_silent,
                     "silence_threshold": settings.silence_threshold,
                     "length_tolerance_ms": settings.length_tolerance_ms},
        "shards": ordered, **(extra or {}),
    }


def prepare(first_dir: str | Path, second_dir: str | Path, out: str | Path, *,
            signals: tuple[str, str] = ("clean", "noisy"), sample_rate: int = 16000, shard_size_mb: float = 256,
            valid_speakers: list[str] | tuple[str, ...] = (), speaker_pattern: str = DEFAULT_SPEAKER_PATTERN,
            workers: int = 1, channel: int | None = None, drop_silent: bool = False,
            silence_threshold: float = 1e-4, length_tolerance_ms: float = 10.0,
            progress: bool = True, manifest_extra: dict | None = None) -> dict[str, dict]:
    """Pack ``first_dir`` (signals[0], e.g. clean) and ``second_dir`` (signals[1], e.g. noisy).

    Returns ``{"train": manifest, "valid": manifest}`` with ``valid_speakers`` (written to
    ``out/train`` and ``out/valid``), else ``{"all": manifest}`` written to ``out`` itself.
    """
    first_dir, second_dir, out = Path(first_dir), Path(second_dir), Path(out)
    if sample_rate < 1000 or shard_size_mb <= 0 or workers < 1 or (channel is not None and channel < 0):
        raise DataError(f"invalid settings: sample_rate={sample_rate}, shard_size_mb={shard_size_mb}, "
                        f"workers={workers}, channel={channel}")
    try:
        re.compile(speaker_pattern)
    except re.error as exc:
        raise DataError(f"--speaker-pattern {speaker_pattern!r}: not a regular expression ({exc})") from None
    settings = Settings(sample_rate, tuple(signals), channel, drop_silent, silence_threshold, length_tolerance_ms)
    pairs = scan(first_dir, second_dir, settings, speaker_pattern, bool(valid_speakers), workers)
    sources = {signals[0]: str(first_dir.resolve()), signals[1]: str(second_dir.resolve())}
    common = dict(shard_size_mb=shard_size_mb, workers=workers, sources=sources, progress=progress,
                  manifest_extra=manifest_extra)
    if not valid_speakers:
        return {"all": pack_split(out, pairs, settings, split=None, **common)}
    found = sorted({p.speaker for p in pairs})
    unknown = [s for s in valid_speakers if s not in found]
    if unknown:
        raise DataError(f"--valid-speakers: no files for speaker {unknown[0]!r} in {first_dir} "
                        f"(speakers found: {', '.join(found[:20])}{' ...' if len(found) > 20 else ''})")
    valid = [p for p in pairs if p.speaker in valid_speakers]
    train = [p for p in pairs if p.speaker not in valid_speakers]
    if not train:
        raise DataError(f"--valid-speakers {','.join(valid_speakers)} leaves no training pairs in {first_dir}")
    return {"train": pack_split(out / "train", train, settings, split="train", **common),
            "valid": pack_split(out / "valid", valid, settings, split="valid", **common)}
