"""Turn an official CMGAN or MP-SENet checkpoint into a toolkit checkpoint: ``python -m trainer.import_checkpoint``.

    python -m trainer.import_checkpoint --format cmgan SRC --out DST.pt [--config configs/cmgan.yaml]
    python -m trainer.import_checkpoint --format mpsenet SRC --out DST.pt [--config configs/mpsenet.yaml]

``SRC`` is the file the authors released: for CMGAN a plain ``TSCNet`` state dict
(``src/best_ckpt/ckpt`` of ruizhecao96/CMGAN), for MP-SENet a dict with a ``generator`` entry
(``best_ckpt/g_best_vb`` of yxlu-0102/MP-SENet; a bare ``MPNet`` state dict is accepted too). The
result holds the generator's weights with the preset's config (the format's ``configs/<format>.yaml``
unless ``--config`` names another with the same architecture), no discriminator and no optimizer
state, step 0, so that ``trainer.evaluate --checkpoint``, ``trainer.enhance --checkpoint`` and
``--set train.init_from=DST.pt`` (fine-tuning: the discriminator starts fresh) take it. It is
written through ``trainer.core.checkpoint`` (atomic, then read back and verified).

A file that is not a checkpoint of that format (not a PyTorch file, a pickle holding code, NaN or
Inf weights), or whose tensors do not fit the config's architecture, is refused with one line
naming the file and the missing/unexpected/mis-shaped or non-finite keys (exit 2); so is an
``--out`` that is a folder.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

from trainer.core.exitcodes import EXIT_BAD_INPUT, EXIT_FINISHED
from trainer.core.log import get_logger, setup_logging

FORMATS = {
    "cmgan": {"preset": "configs/cmgan.yaml", "model": "cmgan",
              "layout": "a plain TSCNet state dict (CMGAN's src/best_ckpt/ckpt)"},
    "mpsenet": {"preset": "configs/mpsenet.yaml", "model": "mpsenet",
                "layout": "a dict with a 'generator' state dict (MP-SENet's best_ckpt/g_best_vb)"},
}
ROOT = Path(__file__).resolve().parents[1]
log = get_logger("import_checkpoint")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m trainer.import_checkpoint", description=__doc__.split("\n")[0])
    parser.add_argument("--format", required=True, choices=sorted(FORMATS), help="who released SRC")
    parser.add_argument("source", type=Path, metavar="SRC", help="the official checkpoint file")
    parser.add_argument("--out", type=Path, required=True, help="the toolkit checkpoint to write (.pt)")
    parser.add_argument("--config", type=Path, help="training config to store with it (default: the format's "
                                                    "preset, configs/<format>.yaml)")
    parser.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    return parser


def _fail(message: str) -> int:
    print(f"import_checkpoint: error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def official_state(raw, fmt: str, path: Path) -> dict:
    """The generator's state dict inside an official file (``ValueError`` naming what is wrong)."""
    import torch

    if fmt == "mpsenet" and isinstance(raw, dict) and "generator" in raw:
        raw = raw["generator"]
    if not isinstance(raw, dict) or not raw:
        raise ValueError(f"{path}: not a {fmt} checkpoint (expected {FORMATS[fmt]['layout']}, "
                         f"found {type(raw).__name__})")
    if "format_version" in raw and "config" in raw:
        raise ValueError(f"{path}: already a toolkit checkpoint; use it as it is")
    bad = [str(k) for k, v in raw.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"{path}: not a {fmt} checkpoint (expected {FORMATS[fmt]['layout']}; "
                         f"non-tensor entries: {', '.join(bad[:5])})")
    nonfinite = [k for k, v in raw.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if nonfinite:
        raise ValueError(f"{path}: non-finite values (NaN or Inf) in {len(nonfinite)} tensor(s), e.g. "
                         f"{', '.join(nonfinite[:3])}: the file is damaged or its training diverged; "
                         "download it again or use another file")
    return raw


def unreadable(path: Path, fmt: str, exc: Exception) -> str:
    """Why ``torch.load(weights_only=True)`` refused ``path``, in our words (torch's advice to
    disable the safe load is not for our users)."""
    import pickle

    if isinstance(exc, pickle.UnpicklingError):
        return (f"{path}: not a readable checkpoint (it holds Python objects other than tensors, which the safe "
                f"load refuses because loading them could run code); an official {fmt} file holds only tensors "
                "(expected " + FORMATS[fmt]["layout"] + "): check where the file came from")
    return (f"{path}: not a readable checkpoint (not a PyTorch file, or a truncated or damaged one: "
            f"{type(exc).__name__}); expected {FORMATS[fmt]['layout']}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(0)
    spec = FORMATS[args.format]
    config_path = args.config or ROOT / spec["preset"]
    if not args.source.is_file():
        return _fail(f"{args.source}: no such file")
    if args.out.is_dir():
        return _fail(f"--out {args.out} is a folder; give the checkpoint's file name, e.g. {args.out / 'imported.pt'}")
    if args.out.exists() and not args.force:
        return _fail(f"--out {args.out} exists; pass --force to overwrite it")
    if args.out.resolve() == args.source.resolve():
        return _fail("--out must differ from SRC")
    from trainer.core.config import ConfigError, load_config

    try:
        cfg = load_config(config_path)
    except ConfigError as exc:
        return _fail(str(exc))
    if cfg.task != "speech_enhancement" or cfg.model.name != spec["model"]:
        return _fail(f"{config_path}: model.name is {cfg.model.name!r}, but a {args.format} checkpoint needs "
                     f"{spec['model']!r} (e.g. {spec['preset']})")

    import torch

    from trainer.core import checkpoint as ckpt
    from trainer.core.config import to_dict
    from trainer.core.registry import build_generator

    try:
        raw = torch.load(args.source, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, not a torch file, unsafe pickle
        return _fail(unreadable(args.source, args.format, exc))
    try:
        weights = official_state(raw, args.format, args.source)
    except ValueError as exc:
        return _fail(str(exc))
    generator = build_generator(cfg)
    try:  # strict, and one line naming the missing/unexpected/mis-shaped keys (official names)
        ckpt.load_module_state(generator.net, weights, f"{args.format} network", args.source)
    except ckpt.CheckpointError as exc:
        return _fail(f"{exc} (expected an official {args.format} file for the sizes of {config_path}: "
                     f"model.num_channels {cfg.model.num_channels}, model.num_layers {cfg.model.num_layers}?)")
    state = {
        "format_version": ckpt.FORMAT_VERSION, "config": to_dict(cfg), "generator": generator.state_dict(),
        "discriminator": {}, "opt_g": {}, "opt_d": {}, "epoch": 0, "step": 0, "batches_done": 0, "sampler": {},
        "rng": [], "best": {}, "versions": ckpt.versions(),
        "imported_from": {"format": args.format, "file": str(args.source.resolve()),
                          "sha256": _sha256(args.source)},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    ckpt.save_atomic(state, args.out)
    try:  # read back through the toolkit's own loader: what evaluate/enhance/init_from will do
        ckpt.load_generator(args.out, task="speech_enhancement")
    except ckpt.CheckpointError as exc:
        return _fail(f"{args.out} was written but does not load back: {exc}")
    log.info("wrote %s: %s generator (%s values) with the config of %s; no discriminator (fine-tuning starts "
             "one fresh)", args.out, args.format, f"{sum(v.numel() for v in weights.values()):,}", config_path)
    return EXIT_FINISHED


if __name__ == "__main__":
    sys.exit(main())
