"""``launch.py check``: preflight before submitting. Prints one line per check; exit 1 if any failed.

Importing torch is left to a child process (login-node start-up stays fast, and a broken
torch install is reported instead of crashing the check).
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from jobs import slurm
from jobs.runs import LaunchError
from jobs.slurm import format_slurm_time
from jobs.submit.profiles import default_cluster, load_profile

DEPENDENCIES = ("torch", "torchaudio", "submitit", "numpy", "h5py", "soundfile", "pesq", "pystoi", "yaml")
_DISTRIBUTIONS = {"yaml": "pyyaml"}


def _line(ok: bool | None, what: str, detail: str) -> bool:
    mark = {True: "ok  ", False: "FAIL", None: "skip"}[ok]
    sys.stdout.write(f"[{mark}] {what}: {detail}\n")
    sys.stdout.flush()
    return ok is not False


def _torch_probe() -> tuple[bool, str]:
    code = ("import torch, importlib; [importlib.import_module(m) for m in ('torchaudio',)];"
            "print(torch.__version__, torch.cuda.device_count())")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        return False, (proc.stderr.strip().splitlines() or ["import failed"])[-1]
    return True, proc.stdout.strip()


def _save_seconds(run_dir: Path) -> tuple[float, int]:
    """Time an fsync'd write of a checkpoint-sized file (the last one, or 64 MB) in the run dir."""
    last = run_dir / "checkpoints" / "last.pt"
    size = last.stat().st_size if last.is_file() else 64 << 20
    block = os.urandom(1 << 20)
    start = time.perf_counter()
    with tempfile.NamedTemporaryFile(dir=run_dir, prefix=".save-probe-") as fh:
        for _ in range(max(1, size >> 20)):
            fh.write(block)
        fh.flush()
        os.fsync(fh.fileno())
    return time.perf_counter() - start, size


def check(args) -> int:
    ok = True
    for module in DEPENDENCIES:
        if module in ("torch", "torchaudio"):
            continue
        try:
            version = importlib.metadata.version(_DISTRIBUTIONS.get(module, module))
            ok &= _line(True, f"import {module}", version)
        except importlib.metadata.PackageNotFoundError:
            ok &= _line(False, f"import {module}", "not installed: pip install -r requirements.txt")
    torch_ok, detail = _torch_probe()
    num_gpus = int(detail.split()[-1]) if torch_ok else 0
    ok &= _line(torch_ok, "import torch, torchaudio", detail.split()[0] if torch_ok else detail)
    _line(None if num_gpus == 0 else True, "GPUs visible",
          f"{num_gpus} (compute nodes only; 0 on a login node is normal)")

    profile = load_profile(args.cluster or default_cluster())
    run_dir = None
    if args.config:
        from trainer.core.config import load_config

        cfg = load_config(args.config, args.overrides)
        run_dir = Path(args.run_dir) if args.run_dir else cfg.run_dir()
        ok &= _check_data(cfg)
    elif args.run_dir:
        run_dir = Path(args.run_dir)
    if run_dir is not None:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            free_gb = shutil.disk_usage(run_dir).free / 1e9
            ok &= _line(free_gb > 5, "run directory", f"{run_dir} writable, {free_gb:.1f} GB free")
            seconds, size = _save_seconds(run_dir)
            lead = args.signal_lead or profile.signal_lead_s
            ok &= _line(lead > 3 * seconds + 30, "signal lead vs save",
                        f"writing {size >> 20} MB took {seconds:.2f} s; lead {lead} s")
        except OSError as exc:
            ok &= _line(False, "run directory", f"{run_dir}: {exc.strerror}")

    if not slurm.available():
        _line(None, "SLURM", "no sbatch on PATH (not a login node); --local runs jobs here")
        return 0 if ok else 1
    ping = slurm.ping()
    reachable = ping is not None and ping.returncode == 0 and "UP" in ping.stdout
    ok &= _line(reachable, "SLURM controller", (ping.stdout.strip() if ping else "scontrol missing") or "no answer")
    partition = args.partition or profile.partition
    info = slurm.partition_info(partition)
    if info is None:
        ok &= _line(False, "partition", f"{partition!r} does not exist (known: {', '.join(slurm.partition_names())})")
    else:
        limit = slurm.partition_max_time_s(info)
        ok &= _line(True, "partition", f"{partition} time limit {format_slurm_time(limit) if limit else 'none'}")
    account = args.account or profile.account
    if account is None:
        ok &= _line(False if profile.account_required else None, "account",
                    "none given (--account ACCOUNT)" if profile.account_required else "none needed")
    elif info is not None:
        problem = slurm.account_error(account, partition)
        ok &= _line(problem is None, "account", f"{account} accepted (sbatch --test-only)" if problem is None
                    else f"{account!r} refused on {partition}: {problem}")
    return 0 if ok else 1


def _check_mixing(cfg) -> bool:
    """Mixing on the fly: every corpus folder is packed (its train/ split, or the folder itself)."""
    from trainer.core.mixing_config import corpus_list

    if cfg.mixing.demo:
        return _line(True, "mixing", "demo corpora (built on first use)")
    ok = True
    for kind in ("speech", "noise", "rir"):
        for path, _ in corpus_list(getattr(cfg.mixing, kind), f"mixing.{kind}"):
            packed = any((Path(path) / sub / "manifest.json").is_file() for sub in ("train", "."))
            ok &= _line(packed, f"mixing.{kind}", f"{path}: " + ("packed" if packed else
                        f"no manifest.json (pack it with python -m trainer.prepare --kind {kind})"))
    return ok


def _check_data(cfg) -> bool:
    if cfg.mixing.active:
        return _check_mixing(cfg)
    if cfg.data.demo:
        return _line(True, "data", "demo corpus (built on first use)")
    ok = True
    for key in ("train_dir", "valid_dir"):
        folder = Path(getattr(cfg.data, key))
        shards = sorted(folder.glob("*.h5"))
        if not (folder / "manifest.json").is_file():
            ok &= _line(False, f"data.{key}", f"{folder}: no manifest.json (pack it with python -m trainer.prepare)")
            continue
        if not shards:
            ok &= _line(False, f"data.{key}", f"{folder}: no .h5 shards (python -m trainer.prepare)")
            continue
        try:
            import h5py

            for shard in shards:
                with h5py.File(shard, "r"):
                    pass
            ok &= _line(True, f"data.{key}", f"{len(shards)} shards readable in {folder}")
        except OSError as exc:
            ok &= _line(False, f"data.{key}", f"unreadable shard: {exc}")
    return ok


__all__ = ["check", "LaunchError"]
