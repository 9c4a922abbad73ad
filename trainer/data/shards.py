"""Datasets and loaders over packed HDF5 shards (format: :mod:`trainer.data.format`; batch order and
crop offsets: :mod:`trainer.data.sampler`).

- :func:`build_train_loader`: random crops of ``data.crop_seconds``. The crop offset is a pure
  function of (seed, epoch, utterance index), never of worker RNG state, so a resumed run is
  bit-exact whatever the number of workers. Shorter utterances are zero-padded at the end
  (``lengths`` holds the true length; padding stays zero after normalisation).
- :func:`build_eval_loader`: whole utterances (or a deterministic centre crop), batch size 1,
  each rank a disjoint subset without duplicates, so ranks may get different numbers of batches.
- Normalisation (``data.normalize``, the CMGAN convention): the input signal (``signals[1]``,
  noisy/input) is scaled to unit RMS and the reference (clean/target) by the same factor; the
  factor is the batch's ``scale`` (divide the output by it to restore the level). With
  ``shuffle_targets`` the two signals are unrelated and each is scaled to unit RMS on its own.
- h5py files are opened lazily in the process that reads (DataLoader workers after the fork)
  and kept open; ranks get disjoint batches and the DataLoader hands each batch to one worker.
  Workers are persistent; ``ShardLoader.close()`` (also run on a DataError and at exit) stops them.
- Bad data raises :class:`DataError` (a BadInput: the trainer exits with code 2) naming the
  shard or manifest, also when it happens inside a worker.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import weakref
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from trainer.audio.level import unit_rms_scale
from trainer.core.log import get_logger
from trainer.core.signals import helper_signals, init_helper
from trainer.data.format import MANIFEST, PAIRED, DataError, check_manifest, manifest_kind, sha256_file
from trainer.data.sampler import TARGET_STREAM, ResumableBatchSampler, crop_offset

__all__ = ["DataError", "ResumableBatchSampler", "ShardIndex", "ShardDataset", "open_split", "split_dirs",
           "build_train_loader", "build_eval_loader", "crop_offset"]

_PACKED_WITH = {PAIRED: "python -m trainer.prepare --clean-dir/--noisy-dir",
                **{k: f"python -m trainer.prepare --kind {k}" for k in ("speech", "noise", "rir")}}
_verified: set[tuple] = set()  # shards whose checksum this process already checked

log = get_logger("data")


class ShardIndex:
    """The manifest of one split plus per-utterance locations (shard, offset, length)."""

    def __init__(self, split_dir: str | Path, *, sample_rate: int | None = None, verify: bool = True,
                 rank: int = 0, world_size: int = 1, kind: str = PAIRED, role: str = ""):
        self.dir = Path(split_dir)
        manifest_path = self.dir / MANIFEST
        if not manifest_path.is_file():
            raise DataError(f"{manifest_path}: not found; pack the data with python -m trainer.prepare (an "
                            "interrupted prepare leaves no manifest: re-run it)")
        try:
            self.manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"{manifest_path}: not valid JSON ({exc}); re-run prepare") from None
        check_manifest(self.manifest, manifest_path)
        self.kind = manifest_kind(self.manifest)
        if self.kind != kind:
            what = f"{role}: " if role else ""
            raise DataError(f"{what}{manifest_path}: a {self.kind} corpus where a {kind} one is expected; "
                            f"give the folder packed with {_PACKED_WITH[kind]}")
        self.sample_rate = int(self.manifest["sample_rate"])
        if sample_rate is not None and sample_rate != self.sample_rate:
            raise DataError(f"{manifest_path}: sample_rate {self.sample_rate} but data.sample_rate is {sample_rate}; "
                            f"re-pack with --sample-rate {sample_rate} or set data.sample_rate")
        self.signals: list[str] = list(self.manifest["signals"])
        self.shard_paths = [self.dir / s["file"] for s in self.manifest["shards"]]
        for i, (path, entry) in enumerate(zip(self.shard_paths, self.manifest["shards"], strict=True)):
            self._check_file(path, entry, hash_it=verify and i % world_size == rank)
        shard_ids, offsets, lengths, self.names, self.speakers = [], [], [], [], []
        for i, (path, entry) in enumerate(zip(self.shard_paths, self.manifest["shards"], strict=True)):
            try:
                with h5py.File(path, "r") as h5:
                    shard_lengths, shard_offsets = h5["lengths"][:], h5["offsets"][:]
                    sizes = {signal: h5[signal].shape for signal in self.signals}
                    self.names += [n.decode() for n in h5["names"][:]]
                    self.speakers += [s.decode() for s in h5["speakers"][:]]
            except Exception as exc:  # h5py raises OSError, KeyError, ValueError... for damaged files
                raise DataError(f"{path}: unreadable shard ({type(exc).__name__}: {exc}); re-copy it or re-run "
                                "prepare") from None
            if len(shard_lengths) != entry["num_pairs"]:
                raise DataError(f"{path}: {len(shard_lengths)} utterances but {manifest_path} says "
                                f"{entry['num_pairs']}; re-run prepare")
            check_index(path, shard_lengths, shard_offsets, sizes, len(self.names) - sum(map(len, lengths)))
            offsets.append(shard_offsets[:-1])
            lengths.append(shard_lengths)
            shard_ids.append(np.full(len(shard_lengths), i, dtype=np.int64))
        self.shard_of = np.concatenate(shard_ids) if shard_ids else np.zeros(0, np.int64)
        self.offset_of = np.concatenate(offsets) if offsets else np.zeros(0, np.int64)
        self.length_of = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
        if len(self) == 0:
            raise DataError(f"{manifest_path}: the split holds no utterances")

    @staticmethod
    def _check_file(path: Path, entry: dict, hash_it: bool) -> None:
        if not path.is_file():
            raise DataError(f"{path}: shard listed in the manifest is missing; re-copy it or re-run prepare")
        stat = path.stat()
        if stat.st_size != entry["num_bytes"]:
            raise DataError(f"{path}: {stat.st_size} bytes but the manifest says {entry['num_bytes']} "
                            "(truncated or replaced); re-copy it or re-run prepare")
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, entry["sha256"])
        if hash_it and key not in _verified:
            if sha256_file(path) != entry["sha256"]:
                raise DataError(f"{path}: sha256 does not match the manifest (corrupted or modified); "
                                "re-copy it or re-run prepare")
            _verified.add(key)

    def __len__(self) -> int:
        return len(self.length_of)


def check_index(path: Path, lengths: np.ndarray, offsets: np.ndarray, sizes: dict[str, tuple], num_names: int) -> None:
    """A shard's ``lengths``/``offsets`` must describe its signals exactly (they carry no checksum of
    their own: with data.verify_checksums false a flipped byte would read out of place)."""
    problem = None
    if lengths.ndim != 1 or offsets.ndim != 1 or lengths.dtype.kind not in "iu" or offsets.dtype.kind not in "iu":
        problem = "lengths/offsets are not integer vectors"
    elif len(offsets) != len(lengths) + 1 or num_names != len(lengths):
        problem = f"{len(lengths)} lengths, {len(offsets)} offsets and {num_names} names do not match"
    elif len(lengths) and (lengths.min() < 1 or offsets[0] != 0 or np.any(np.diff(offsets) != lengths)):
        problem = "lengths and offsets disagree"
    elif any(shape != (int(offsets[-1]),) for shape in sizes.values()):
        problem = f"offsets end at {int(offsets[-1])} but the signals hold {sorted(set(sizes.values()))} samples"
    if problem:
        raise DataError(f"{path}: damaged index ({problem}); re-copy it or re-run prepare")


class ShardDataset(Dataset):
    """Items are dicts of numpy arrays; keys are ``(epoch, index)`` in training, ``index`` in eval.

    ``crop_samples``: training crop length (zero-padded when shorter); in eval mode, ``None`` =
    whole utterances, else a centre crop of at most that many samples.
    """

    def __init__(self, index: ShardIndex, *, train: bool, crop_samples: int | None, seed: int = 0,
                 normalize: bool = True, shuffle_targets: bool = False):
        self.index, self.train, self.crop_samples, self.seed = index, train, crop_samples, seed
        self.normalize, self.shuffle_targets = normalize, shuffle_targets and train
        self.reference, self.input = index.signals
        self.files_opened = 0
        self._files: dict[int, dict[str, h5py.Dataset]] = {}
        self._pid = os.getpid()
        self._target_perm: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.index)

    def __getstate__(self) -> dict:  # h5py handles do not survive pickling or fork
        state = dict(self.__dict__)
        state["_files"] = {}
        return state

    def _datasets(self, shard: int) -> dict[str, h5py.Dataset]:
        """The shard's signal datasets, opened on first use in this process (cached: h5py's
        name lookup costs as much as reading a crop)."""
        if self._pid != os.getpid():
            self._files, self._pid = {}, os.getpid()
        if shard not in self._files:
            path = self.index.shard_paths[shard]
            try:
                h5 = h5py.File(path, "r")
                self._files[shard] = {s: h5[s] for s in (self.reference, self.input)}
            except (OSError, KeyError) as exc:
                raise DataError(f"{path}: cannot open shard ({exc}); re-copy it or re-run prepare") from None
            self.files_opened += 1
        return self._files[shard]

    def read(self, item: int, signal: str, start: int, num: int) -> np.ndarray:
        shard = int(self.index.shard_of[item])
        first = int(self.index.offset_of[item]) + start
        try:
            return self._datasets(shard)[signal][first:first + num]
        except OSError as exc:
            raise DataError(f"{self.index.shard_paths[shard]}: cannot read utterance "
                            f"{self.index.names[item]!r} ({exc}); the shard is truncated or corrupted: "
                            "re-copy it or re-run prepare") from None

    def _target_of(self, epoch: int, item: int) -> int:
        if self._target_perm is None or self._target_perm[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch, TARGET_STREAM])
            self._target_perm = (epoch, rng.permutation(len(self)))
        return int(self._target_perm[1][item])

    def _crop(self, epoch: int, item: int, signals: list[str]) -> dict[str, np.ndarray]:
        length = int(self.index.length_of[item])
        start = crop_offset(self.seed, epoch, item, length, self.crop_samples)
        num = min(length, self.crop_samples)
        out = {}
        for signal in signals:
            wave = np.zeros(self.crop_samples, dtype=np.float32)
            wave[:num] = self.read(item, signal, start, num)
            out[signal] = wave
        return out

    def __getitem__(self, key) -> dict:
        if self.train:
            epoch, item = key
            target = self._target_of(epoch, item) if self.shuffle_targets else item
            waves = {**self._crop(epoch, item, [self.input]), **self._crop(epoch, target, [self.reference])}
            valid = {s: min(int(self.index.length_of[i]), self.crop_samples)
                     for s, i in ((self.input, item), (self.reference, target))}
            length = min(valid.values())
        else:
            item = key
            full = int(self.index.length_of[item])
            length = full if self.crop_samples is None else min(full, self.crop_samples)
            start = (full - length) // 2
            waves = {s: self.read(item, s, start, length) for s in (self.reference, self.input)}
            valid = dict.fromkeys(waves, length)
        scale = 1.0
        if self.normalize:
            scale = unit_rms_scale(waves[self.input][:valid[self.input]])
            waves[self.input] = waves[self.input] * scale
            ref_scale = unit_rms_scale(waves[self.reference][:valid[self.reference]]) if self.shuffle_targets else scale
            waves[self.reference] = waves[self.reference] * ref_scale
        return {**waves, "length": length, "name": self.index.names[item], "index": item, "scale": scale}


def collate(items: list[dict]) -> dict:
    signals = [k for k in items[0] if isinstance(items[0][k], np.ndarray)]
    batch = {s: torch.from_numpy(np.stack([it[s] for it in items])) for s in signals}
    batch["lengths"] = torch.tensor([it["length"] for it in items], dtype=torch.long)
    batch["names"] = [it["name"] for it in items]
    batch["index"] = torch.tensor([it["index"] for it in items], dtype=torch.long)
    batch["scale"] = torch.tensor([it["scale"] for it in items], dtype=torch.float32)
    return batch


class _EpochKeys:
    """Wraps the batch sampler so that every key carries the epoch: items stay pure functions."""

    def __init__(self, sampler: ResumableBatchSampler):
        self.sampler = sampler

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        epoch = self.sampler.epoch
        for batch in self.sampler:
            yield [(epoch, i) for i in batch]


class ShardLoader(DataLoader):
    """A DataLoader whose worker DataErrors surface as the original one-line message, and whose
    persistent workers are stopped by :meth:`close`, on such an error, and at interpreter exit.

    The exit hook matters: the workers ignore SIGTERM (SLURM signals every process of a step),
    and multiprocessing's own exit hook stops daemon workers with SIGTERM and then joins them,
    which would wait forever; torch skips its own shutdown once the interpreter is exiting.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _live_loaders.add(self)

    def close(self) -> None:
        """Stop the worker processes (a later iteration starts new ones)."""
        iterator = getattr(self, "_iterator", None)
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()
        self._iterator = None

    def __iter__(self):
        iterator = super().__iter__()
        while True:
            try:
                batch = next(iterator)
            except StopIteration:
                return
            except DataError as exc:
                text = str(exc)
                if "Original Traceback" in text:  # re-raised from a worker: keep the last line's message
                    text = text.strip().splitlines()[-1].split("DataError: ", 1)[-1]
                del iterator
                self.close()
                raise DataError(text) from None
            yield batch


_live_loaders: weakref.WeakSet[ShardLoader] = weakref.WeakSet()


@atexit.register  # registered after multiprocessing's and torch's hooks, so it runs before them
def _close_live_loaders() -> None:
    for loader in list(_live_loaders):
        loader.close()


def split_dirs(cfg) -> tuple[str, str]:
    """(train_dir, valid_dir) from the config; the demo corpus (built once) when data.demo. A mixing
    config has no train_dir; its valid_dir is data.valid_dir or the fixed validation mixtures."""
    mixing = getattr(cfg, "mixing", None)
    if mixing is not None and mixing.active:
        from trainer.data.mixvalid import ensure_valid_set

        return "", str(cfg.data.valid_dir or ensure_valid_set(cfg))
    if cfg.data.demo:
        from trainer.data.demo import demo_for

        paths = demo_for(cfg)
        return paths["train"], paths["valid"]
    return cfg.data.train_dir, cfg.data.valid_dir


def open_split(split_dir: str | Path, cfg, rank: int = 0, world_size: int = 1) -> ShardIndex:
    return ShardIndex(split_dir, sample_rate=cfg.data.sample_rate, verify=cfg.data.verify_checksums,
                      rank=rank, world_size=world_size)


def _loader(dataset: Dataset, batch_sampler, num_workers: int) -> ShardLoader:
    # Workers ignore SIGUSR2/SIGTERM (SLURM signals every process; the rank saves, then stops them) and
    # Ctrl-C when the trainer handles it
    # and draw no seed from the global torch RNG (own generator), which keeps resumes bit-exact.
    return ShardLoader(dataset, batch_sampler=batch_sampler, num_workers=num_workers, collate_fn=collate,
                       worker_init_fn=functools.partial(init_helper, helper_signals(), os.getpid()),
                       generator=torch.Generator().manual_seed(0),
                       pin_memory=torch.cuda.is_available(), persistent_workers=num_workers > 0)


def build_train_loader(cfg, rank: int, world_size: int) -> tuple[DataLoader, ResumableBatchSampler]:
    """Training loader over data.train_dir (or the demo corpus) and its resumable sampler.

    Batch: ``{<signals[0]>, <signals[1]>: FloatTensor (B, T), "lengths", "index": LongTensor (B,),
    "names": list[str], "scale": FloatTensor (B,)}``; signals are clean/noisy (or target/input).
    """
    train_dir, _ = split_dirs(cfg)
    index = open_split(train_dir, cfg, rank, world_size)
    crop = int(round(cfg.data.crop_seconds * index.sample_rate))
    dataset = ShardDataset(index, train=True, crop_samples=crop, seed=cfg.run.seed, normalize=cfg.data.normalize,
                           shuffle_targets=cfg.data.shuffle_targets)
    per_step = cfg.data.batch_size * world_size
    if len(index) < per_step:
        raise DataError(f"{index.dir}: {len(index)} utterances, fewer than data.batch_size x world_size = "
                        f"{per_step}; lower data.batch_size")
    sampler = ResumableBatchSampler(len(index), cfg.data.batch_size, rank, world_size, cfg.run.seed)
    return _loader(dataset, _EpochKeys(sampler), cfg.data.num_workers), sampler


def build_eval_loader(split_dir: str | Path | None, cfg, rank: int, world_size: int, *,
                      max_seconds: float | None = None, max_utterances: int | None = None,
                      num_workers: int | None = None) -> DataLoader:
    """Deterministic loader (batch size 1) over this rank's disjoint share of ``split_dir``.

    ``split_dir=None`` means the config's validation split. ``max_utterances`` keeps an evenly
    spaced subset (covering all speakers); ``max_seconds`` takes a centre crop of that length.
    ``num_workers`` defaults to ``data.num_workers``.
    """
    if split_dir is None:
        split_dir = split_dirs(cfg)[1]
    index = open_split(split_dir, cfg, rank, world_size)
    items = np.arange(len(index))
    if max_utterances is not None and max_utterances < len(index):
        items = np.unique(np.linspace(0, len(index) - 1, max_utterances).round().astype(np.int64))
    crop = None if max_seconds is None else int(round(max_seconds * index.sample_rate))
    dataset = ShardDataset(index, train=False, crop_samples=crop, normalize=cfg.data.normalize)
    batches = [[int(i)] for i in items[rank::world_size]]
    workers = cfg.data.num_workers if num_workers is None else num_workers
    return _loader(dataset, batches, min(workers, len(batches)))
