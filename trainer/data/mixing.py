"""On-the-fly mixing: the ``mixing`` data kind's loaders (``mixing.speech`` set in the config).

Training item ``(epoch, index)`` is the mixture whose parameters :func:`trainer.data.mixer.draw`
draws from ``numpy.random.default_rng([run.seed, epoch, index, MIX_STREAM])``: a pure function of
(seed, epoch, index), never of worker or process RNG state, so the resumable batch sampler of the
paired shards (:mod:`trainer.data.sampler`) makes a resumed run bit-exact with any number of
workers. An epoch has ``mixing.items_per_epoch`` mixtures (default: the training speech items).

The corpora are single-signal shard folders (``prepare --kind speech|noise|rir``); a folder with
``train/`` and ``valid/`` splits gives its ``train/`` to training and its ``valid/`` to the fixed
validation set (:mod:`trainer.data.mixvalid`), which is a paired shard folder read by the paired
kind's eval loader.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
from torch.utils.data import Dataset

from trainer.audio.level import unit_rms_scale
from trainer.core.mixing_config import corpus_list
from trainer.data import mixer
from trainer.data.format import MANIFEST, DataError
from trainer.data.sampler import ResumableBatchSampler
from trainer.data.shards import ShardIndex, _EpochKeys, _loader

MIX_STREAM = 4  # after the sampler's CROP/TARGET/SHUFFLE streams
KINDS = ("speech", "noise", "rir")


def corpus_entries(cfg, kind: str) -> list[tuple[str, float]]:
    """``[(folder, weight), ...]`` of ``mixing.<kind>`` (the demo corpora with ``mixing.demo``)."""
    if cfg.mixing.demo:
        from trainer.data.demo_mixing import ensure_mixing_demo

        return [(ensure_mixing_demo(sample_rate=cfg.data.sample_rate)[kind], 1.0)]
    return corpus_list(getattr(cfg.mixing, kind), f"mixing.{kind}")


def split_folder(path: str | Path, split: str, key: str) -> Path:
    """``path/split`` when the corpus was packed with a held-out split, else ``path`` (training only)."""
    path = Path(path)
    if (path / split / MANIFEST).is_file():
        return path / split
    if split == "train" and (path / MANIFEST).is_file():
        return path
    if not path.exists():
        raise DataError(f"{key}: {path}: no such folder; pack the corpus with python -m trainer.prepare --kind "
                        f"{key.split('.')[-1]} --in-dir DIR --out {path}")
    if split == "valid":
        raise DataError(f"{key}: {path} has no valid/ split; re-pack it with --valid-fraction (or "
                        "--valid-speakers for speech), or set data.valid_dir")
    raise DataError(f"{key}: {path}: no manifest.json (nor train/manifest.json); pack it with python -m "
                    f"trainer.prepare --kind {key.split('.')[-1]}")


class Corpora:
    """The speech, noise and RIR corpora of one split, their weights, and lazily opened readers."""

    def __init__(self, cfg, split: str, rank: int = 0, world_size: int = 1):
        self.indexes: dict[str, list[ShardIndex]] = {}
        self.weights: dict[str, np.ndarray] = {}
        for kind in KINDS:
            key = f"mixing.{kind}"
            entries = corpus_entries(cfg, kind)
            if kind == "rir" and (not entries or cfg.mixing.reverb_probability == 0):
                entries = []
            self.indexes[kind] = [ShardIndex(split_folder(path, split, key), sample_rate=cfg.data.sample_rate,
                                             verify=cfg.data.verify_checksums, rank=rank, world_size=world_size,
                                             kind=kind, role=key) for path, _ in entries]
            weights = np.array([w for _, w in entries], dtype=np.float64)
            self.weights[kind] = weights / weights.sum() if len(weights) else weights
        self.sizes = {k: [ix.length_of for ix in v] for k, v in self.indexes.items()}
        self._files: dict[tuple[str, int, int], h5py.Dataset] = {}
        self._pid = os.getpid()

    def __getstate__(self) -> dict:  # h5py handles do not survive pickling or fork
        return {**self.__dict__, "_files": {}}

    def read(self, kind: str, pick: mixer.Pick, start: int, num: int) -> np.ndarray:
        index = self.indexes[kind][pick.corpus]
        shard = int(index.shard_of[pick.item])
        if self._pid != os.getpid():
            self._files, self._pid = {}, os.getpid()
        key = (kind, pick.corpus, shard)
        try:
            if key not in self._files:
                self._files[key] = h5py.File(index.shard_paths[shard], "r")[kind]
            first = int(index.offset_of[pick.item]) + start
            return self._files[key][first:first + num]
        except (OSError, KeyError) as exc:
            raise DataError(f"{index.shard_paths[shard]}: cannot read {kind} item {index.names[pick.item]!r} "
                            f"({exc}); the shard is truncated or corrupted: re-copy it or re-run prepare") from None

    def name(self, kind: str, pick: mixer.Pick) -> str:
        return self.indexes[kind][pick.corpus].names[pick.item]

    def signals(self, params: mixer.MixParams, num: int, fade: int):
        """(speech, noises looped to ``num``, rir or None) for ``params``."""
        speech = self.read("speech", params.speech, params.speech.offset, num)
        noises = []
        for pick in params.noises:
            length = int(self.sizes["noise"][pick.corpus][pick.item])
            if length >= pick.offset + num:
                noises.append(self.read("noise", pick, pick.offset, num))
            else:
                noises.append(mixer.loop_noise(self.read("noise", pick, 0, length), pick.offset, num, fade))
        rir = None
        if params.rir is not None:
            rir = self.read("rir", params.rir, 0, int(self.sizes["rir"][params.rir.corpus][params.rir.item]))
        return speech, noises, rir

    def describe(self, params: mixer.MixParams, gains: dict, name: str) -> dict:
        """The JSON record of one mixture (``trainer.mixtures``' params.jsonl, the validation manifest)."""
        return {"name": name, "snr_db": params.snr_db, "speech": self.name("speech", params.speech),
                "speech_offset": params.speech.offset, "level_dbfs": params.level_dbfs,
                "noise": [self.name("noise", p) for p in params.noises],
                "noise_offsets": [p.offset for p in params.noises],
                "rir": self.name("rir", params.rir) if params.rir is not None else None,
                **gains, "bandlimit_rate": params.bandlimit_rate, "clip_quantile": params.clip_quantile,
                "gain_db": params.gain_db}


class MixtureDataset(Dataset):
    """Training mixtures: key ``(epoch, index)`` -> the batch item of the paired loaders (clean/noisy)."""

    def __init__(self, corpora: Corpora, cfg, crop: int, items_per_epoch: int):
        self.corpora, self.mixing, self.crop, self.num = corpora, cfg.mixing, crop, items_per_epoch
        self.seed, self.sample_rate, self.normalize = cfg.run.seed, cfg.data.sample_rate, cfg.data.normalize
        self.fade = int(round(cfg.mixing.noise_crossfade_ms * self.sample_rate / 1000))

    def __len__(self) -> int:
        return self.num

    def params(self, epoch: int, index: int) -> mixer.MixParams:
        rng = np.random.default_rng([self.seed, epoch, index, MIX_STREAM])
        return mixer.draw(rng, self.corpora.sizes, self.corpora.weights, self.mixing, self.crop, self.sample_rate)

    def mixture(self, epoch: int, index: int) -> tuple[np.ndarray, np.ndarray, dict]:
        """(clean, noisy, record) before normalisation: what ``trainer.mixtures`` writes."""
        params = self.params(epoch, index)
        clean, noisy, gains = mixer.render(params, *self.corpora.signals(params, self.crop, self.fade),
                                           self.mixing, self.sample_rate)
        return clean, noisy, self.corpora.describe(params, gains, mixture_name(epoch, index))

    def __getitem__(self, key) -> dict:
        epoch, index = key
        clean, noisy, _ = self.mixture(epoch, index)
        scale = unit_rms_scale(noisy) if self.normalize else np.float32(1.0)
        if self.normalize:
            clean, noisy = clean * scale, noisy * scale
        return {"clean": clean, "noisy": noisy, "length": self.crop, "name": mixture_name(epoch, index),
                "index": index, "scale": scale}


def mixture_name(epoch: int, index: int) -> str:
    return f"e{epoch:04d}_{index:07d}"


def check_speech_lengths(corpora: Corpora, crop: int, crop_seconds: float) -> None:
    for index in corpora.indexes["speech"]:
        shortest = int(np.argmin(index.length_of))
        if index.length_of[shortest] < crop:
            raise DataError(f"{index.dir}: speech item {index.names[shortest]!r} has {index.length_of[shortest]} "
                            f"samples, shorter than data.crop_seconds={crop_seconds} ({crop} samples); lower "
                            "data.crop_seconds or re-pack the corpus without the short files")


def training_dataset(cfg, rank: int = 0, world_size: int = 1) -> MixtureDataset:
    corpora = Corpora(cfg, "train", rank, world_size)
    crop = int(round(cfg.data.crop_seconds * cfg.data.sample_rate))
    check_speech_lengths(corpora, crop, cfg.data.crop_seconds)
    items = cfg.mixing.items_per_epoch or sum(len(ix) for ix in corpora.indexes["speech"])
    return MixtureDataset(corpora, cfg, crop, items)


def build_train_loader(cfg, rank: int, world_size: int):
    """The mixing kind's training loader and its resumable sampler (the paired kind's batch layout)."""
    dataset = training_dataset(cfg, rank, world_size)
    if len(dataset) < cfg.data.batch_size * world_size:
        raise DataError(f"mixing.items_per_epoch: {len(dataset)} mixtures, fewer than data.batch_size x world_size "
                        f"= {cfg.data.batch_size * world_size}; raise it or lower data.batch_size")
    sampler = ResumableBatchSampler(len(dataset), cfg.data.batch_size, rank, world_size, cfg.run.seed)
    return _loader(dataset, _EpochKeys(sampler), cfg.data.num_workers), sampler


def build_eval_loader(split_dir, cfg, rank: int, world_size: int, **kwargs):
    """The paired kind's eval loader; ``split_dir=None``: data.valid_dir when set, else the fixed
    validation mixtures (synthesised once: :func:`trainer.data.mixvalid.ensure_valid_set`)."""
    from trainer.data import shards

    return shards.build_eval_loader(split_dir, cfg, rank, world_size, **kwargs)
