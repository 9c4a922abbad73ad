"""The fixed validation set of a mixing run: synthesised once, deterministically, into a paired dataset.

Held-out speakers (the speech corpora's ``valid/`` splits) are mixed with held-out noise and RIR files
(the noise and RIR corpora's ``valid/`` splits), so validation never hears a training speaker or
noise file. Mixture ``i`` uses held-out speech item ``i`` (cycling through the corpora in order),
whole, and parameters drawn from ``default_rng([VALID_SEED, i, MIX_STREAM])`` with the training
ranges; they do not depend on ``run.seed``, so runs with different seeds select checkpoints on the
same set. The set is packed with :func:`trainer.data.pack.prepare` (float32 wav in between, exact);
its manifest holds ``mixtures`` (each pair's parameters: ``snr_db``, source ids, gains) and
``mixing_digest``. It is built in a temporary folder and renamed into place (concurrent ranks agree
on one copy); an existing set is reused only when its digest matches.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from trainer.core.log import get_logger
from trainer.core.settings import to_dict
from trainer.data import mixer
from trainer.data.format import MANIFEST, DataError
from trainer.data.mixing import MIX_STREAM, Corpora

VALID_SEED = 20250  # fixed: the validation set does not change with run.seed
VALID_VERSION = 1
IGNORED = ("items_per_epoch", "valid_dir")  # settings that do not change the validation set

log = get_logger("mixing")


def digest(cfg, corpora: Corpora) -> str:
    settings = {k: v for k, v in to_dict(cfg.mixing).items()
                if k not in IGNORED and k not in ("speech", "noise", "rir")}
    sources = {kind: [[ix.manifest["shards"][i]["sha256"] for i in range(len(ix.manifest["shards"]))]
                      for ix in indexes] for kind, indexes in corpora.indexes.items()}
    text = json.dumps([VALID_VERSION, cfg.data.sample_rate, settings, sources,
                       {k: corpora.weights[k].tolist() for k in corpora.weights}], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def valid_mixtures(cfg, corpora: Corpora, count: int | None = None):
    """Yield (clean, noisy, record) of each validation mixture (whole held-out utterances)."""
    items = [(c, i) for c, ix in enumerate(corpora.indexes["speech"]) for i in range(len(ix))]
    count = count or cfg.mixing.valid_items or len(items)
    fade = int(round(cfg.mixing.noise_crossfade_ms * cfg.data.sample_rate / 1000))
    for n in range(count):
        corpus, item = items[n % len(items)]
        rng = np.random.default_rng([VALID_SEED, n, MIX_STREAM])
        params = mixer.draw(rng, corpora.sizes, corpora.weights, cfg.mixing, None, cfg.data.sample_rate,
                            speech_item=(corpus, item))
        length = int(corpora.sizes["speech"][corpus][item])
        clean, noisy, gains = mixer.render(params, *corpora.signals(params, length, fade), cfg.mixing,
                                           cfg.data.sample_rate)
        speaker = corpora.indexes["speech"][corpus].speakers[item].replace("_", "-") or "mix"
        yield clean, noisy, corpora.describe(params, gains, f"{speaker}_{n:06d}")


def _synthesise(cfg, corpora: Corpora, out: Path, stamp: str) -> None:
    from trainer.data.pack import prepare

    wav = out / "wav"
    records = []
    for clean, noisy, record in valid_mixtures(cfg, corpora):
        for kind, wave in (("clean", clean), ("noisy", noisy)):
            (wav / kind).mkdir(parents=True, exist_ok=True)
            sf.write(wav / kind / f"{record['name']}.wav", wave, cfg.data.sample_rate, subtype="FLOAT")
        records.append(record)
    prepare(wav / "clean", wav / "noisy", out / "set", sample_rate=cfg.data.sample_rate, shard_size_mb=64,
            workers=1, progress=False, manifest_extra={"mixtures": records, "mixing_digest": stamp})
    shutil.rmtree(wav)


def ensure_valid_set(cfg) -> Path:
    """The validation set's folder (a paired dataset), synthesised on first use."""
    corpora = Corpora(cfg, "valid")
    stamp = digest(cfg, corpora)
    root = Path(cfg.mixing.valid_dir) if cfg.mixing.valid_dir else Path("logs/mixing_valid") / stamp[:16]
    manifest = root / MANIFEST
    if manifest.is_file():
        found = json.loads(manifest.read_text(encoding="utf-8")).get("mixing_digest")
        if found == stamp:
            return root
        raise DataError(f"mixing.valid_dir: {root} holds a validation set of other corpora or settings (digest "
                        f"{str(found)[:16]}, these make {stamp[:16]}); delete it or choose another folder")
    root.parent.mkdir(parents=True, exist_ok=True)
    log.info("synthesising the validation mixtures into %s", root)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        _synthesise(cfg, corpora, tmp, stamp)
        try:
            (tmp / "set").rename(root)
        except OSError:
            if not manifest.is_file():  # not a concurrent builder that finished first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root
