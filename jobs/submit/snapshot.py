"""The code a job runs: a copy of the checkout taken at submission (no torch).

``take(folder)`` copies the project's code into ``FOLDER/code/`` (``RUN_DIR/slurm/code/``; a sweep
has one under ``RUN_ROOT/slurm/code/`` for its whole array) and writes ``FOLDER/code.json``: the
git revision, whether the checkout differed from it (``dirty``, with the changed and untracked
files), the file count, size and the seconds the copy took. What is copied: in a git checkout,
``git ls-files -co --exclude-standard`` (tracked files as they are in the working tree, i.e. HEAD
plus uncommitted changes, and untracked files that git does not ignore; never ``logs/``, ``data/``
or ``.venv/``, which are ignored); elsewhere ``launch.py``, ``jobs/``, ``trainer/`` and ``configs/``.

Every attempt of the job imports ``jobs`` and ``trainer`` from the copy: :func:`setup_lines` puts
it first on ``PYTHONPATH`` with ``PYTHONSAFEPATH=1`` (Python does not put the working directory on
``sys.path``), while the job's working directory stays the checkout, so relative data paths of a
config (``data/vbd/train``, ``logs/demo_corpus``) mean what they meant at submission. Editing the
checkout afterwards changes neither a queued job nor its requeues. ``SEGAN_CODE`` (revision, dirty,
snapshot path) reaches the trainer, which stores it in every checkpoint.

A copy is made in a temporary folder beside ``code/`` and renamed into place; an older snapshot
(resubmission with the same run directory) is replaced only then.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import tempfile
import time
from pathlib import Path

from jobs import ROOT
from trainer.core import revision
from trainer.core.io import atomic_write_text
from trainer.core.revision import changes, checkout_version, git

CODE_DIR = "code"
CODE_JSON = "code.json"
ENV_VARIABLE = "SEGAN_CODE"  # read by trainer/core/checkpoint.py (code_version)
FALLBACK = ("launch.py", "jobs", "trainer", "configs")  # not a git checkout: copy these
_SKIP = ("__pycache__", ".pyc")


def _fallback_files(root: Path) -> list[str]:
    files = []
    for name in FALLBACK:
        path = root / name
        if path.is_file():
            files.append(name)
        elif path.is_dir():
            for dirpath, dirnames, filenames in os.walk(path):
                dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
                files += [os.path.relpath(os.path.join(dirpath, f), root) for f in sorted(filenames)
                          if not f.endswith(_SKIP)]
    return files


def inventory(root: Path = ROOT) -> dict:
    """What a snapshot of ``root`` would hold: files (relative paths), revision, dirty, changed files."""
    root = Path(root)
    revision = git(root, "rev-parse", "HEAD")
    listed = git(root, "ls-files", "-z", "-c", "-o", "--exclude-standard") if revision else None
    if revision is None or listed is None:
        return {"method": "copy", "revision": None, "dirty": None, "changed": [], "untracked": [],
                "files": _fallback_files(root)}
    # ls-files -c lists a tracked file deleted in the working tree: it is not there to copy
    names = sorted({name for name in listed.split("\0") if name and os.path.lexists(root / name)})
    changed, untracked = changes(root)
    return {"method": "git", "revision": revision.strip(), "dirty": bool(changed or untracked),
            "changed": changed, "untracked": untracked, "files": names}


def _copy_files(root: Path, files: list[str], dest: Path) -> int:
    total = 0
    made: set[Path] = set()
    for name in files:
        src, dst = root / name, dest / name
        if dst.parent not in made:
            dst.parent.mkdir(parents=True, exist_ok=True)
            made.add(dst.parent)
        if src.is_symlink():
            os.symlink(os.readlink(src), dst)
            continue
        if not src.is_file():  # a submodule's folder or a socket: not code we run
            continue
        shutil.copy2(src, dst)
        total += dst.stat().st_size
    return total


def _record(folder: Path, root: Path, info: dict, size: int, seconds: float) -> dict:
    return {"snapshot": str(Path(folder) / CODE_DIR), "source": str(Path(root).resolve()), "method": info["method"],
            "revision": info["revision"], "dirty": info["dirty"], "changed": info["changed"][:50],
            "untracked": info["untracked"][:50], "num_files": len(info["files"]), "bytes": size,
            "seconds": round(seconds, 3), "taken": _now()}


def live(root: Path = ROOT) -> dict:
    """What a run in the checkout itself (``--local``: no copy) records in its checkpoints."""
    return {"revision": None, "dirty": None, **(checkout_version(root) or {}), "snapshot": None}


def describe_live(record: dict) -> str:
    if record["revision"] is None:
        return f"code:          {revision.describe(record)}: checkpoints record none"
    return f"code:          {revision.describe(record)}, run from the checkout itself (no snapshot)"


def planned(folder: Path, root: Path = ROOT) -> dict:
    """The record a snapshot taken now would get, without copying anything (``--dry-run``)."""
    info = inventory(root)
    size = sum((Path(root) / name).stat().st_size for name in info["files"] if (Path(root) / name).is_file())
    return {**_record(folder, root, info, size, 0.0), "planned": True}


def take(folder: Path, root: Path = ROOT) -> dict:
    """Copy the code of ``root`` into ``FOLDER/code`` and write ``FOLDER/code.json``; returns its record
    (plus ``replaced``: the record of the snapshot this one replaced, if any)."""
    folder = Path(folder)
    started = time.perf_counter()
    info = inventory(root)
    previous = read(folder)
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".code-", dir=folder))
    try:
        size = _copy_files(Path(root), info["files"], staging)
        final = folder / CODE_DIR
        old = None
        if final.exists():
            old = folder / f".code-old-{os.getpid()}-{time.monotonic_ns()}"
            final.rename(old)
        staging.rename(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    record = _record(folder, root, info, size, time.perf_counter() - started)
    atomic_write_text(folder / CODE_JSON, json.dumps(record, indent=1, sort_keys=True) + "\n")
    if previous is not None:
        record["replaced"] = previous
    return record


def write_record(folder: Path, record: dict) -> None:
    """A run's ``slurm/code.json`` naming a snapshot taken elsewhere (a sweep's elements share one)."""
    atomic_write_text(Path(folder) / CODE_JSON, json.dumps({k: v for k, v in record.items() if k != "replaced"},
                                                           indent=1, sort_keys=True) + "\n")


def read(folder: Path) -> dict | None:
    try:
        value = json.loads((Path(folder) / CODE_JSON).read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _now() -> str:
    from jobs.runs import now_iso

    return now_iso()


def env_value(record: dict) -> str:
    """What the trainer stores in each checkpoint (``SEGAN_CODE``)."""
    return json.dumps({"revision": record.get("revision"), "dirty": record.get("dirty"),
                       "snapshot": record.get("snapshot")}, sort_keys=True)


def setup_lines(record: dict) -> list[str]:
    """Batch-script lines: import ``jobs``/``trainer`` from the snapshot in every process of the job."""
    snapshot = shlex.quote(record["snapshot"])
    return [f"export PYTHONPATH={snapshot}${{PYTHONPATH:+:$PYTHONPATH}} PYTHONSAFEPATH=1"
            "  # every attempt runs the code snapshot taken at submission",
            f"export {ENV_VARIABLE}={shlex.quote(env_value(record))}"]


def describe(record: dict) -> str:
    """One line for the submission's output."""
    if record.get("revision"):
        state = "clean"
        if record.get("dirty"):
            state = (f"dirty: {len(record.get('changed') or [])} changed, {len(record.get('untracked') or [])} "
                     "untracked file(s) included")
        what = f"revision {record['revision'][:12]} ({state})"
    else:
        what = "not a git checkout: launch.py, jobs/, trainer/, configs/ copied"
    if record.get("planned"):
        return (f"code snapshot: at submission, {record['num_files']} files ({record['bytes'] / 1e6:.1f} MB) of "
                f"{what} are copied to {record['snapshot']}")
    line = (f"code snapshot: {record['snapshot']}  {what}; {record['num_files']} files, "
            f"{record['bytes'] / 1e6:.1f} MB in {record['seconds']:.2f} s")
    replaced = record.get("replaced")
    if replaced:
        line += (f"\n               (a new snapshot: it replaced the one taken {replaced.get('taken', '?')} "
                 f"of revision {(replaced.get('revision') or '-')[:12]})")
    return line
