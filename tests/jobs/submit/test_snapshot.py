"""The code snapshot (jobs/submit/snapshot.py): what is copied from a git checkout (tracked files with their
uncommitted changes, untracked files git does not ignore; nothing ignored), the revision and dirty
flag, the fallback outside git, a retake that replaces the old copy, and the field every checkpoint
gets from SEGAN_CODE (trainer/core/checkpoint.py)."""

import json
import os
import subprocess

import pytest

from jobs import ROOT
from jobs.submit import snapshot


def git(repo, *args):
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                   env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@x"})


@pytest.fixture
def checkout(tmp_path):
    repo = tmp_path / "checkout"
    (repo / "jobs").mkdir(parents=True)
    (repo / "jobs" / "a.py").write_text("A = 1\n")
    (repo / "launch.py").write_text("print('hi')\n")
    (repo / ".gitignore").write_text("/logs/\n/data/\n*.pyc\n")
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "init")
    return repo


def test_a_clean_checkout_is_copied_with_its_revision(checkout, tmp_path):
    (checkout / "logs").mkdir()
    (checkout / "logs" / "big.bin").write_bytes(b"x" * 1000)
    record = snapshot.take(tmp_path / "run" / "slurm", root=checkout)
    copy = tmp_path / "run" / "slurm" / "code"
    assert sorted(str(p.relative_to(copy)) for p in copy.rglob("*") if p.is_file()) == [".gitignore", "jobs/a.py",
                                                                                      "launch.py"]
    head = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    assert record["revision"] == head.strip() and record["dirty"] is False and record["num_files"] == 3
    assert json.loads((tmp_path / "run" / "slurm" / "code.json").read_text())["revision"] == record["revision"]


def test_uncommitted_changes_and_untracked_files_are_included_and_make_it_dirty(checkout, tmp_path):
    (checkout / "jobs" / "a.py").write_text("A = 2  # not committed\n")
    (checkout / "jobs" / "new.py").write_text("NEW = 1\n")
    (checkout / "jobs" / "cache.pyc").write_bytes(b"ignored")
    (checkout / "launch.py").unlink()  # a tracked file deleted in the working tree is not copied
    record = snapshot.take(tmp_path / "slurm", root=checkout)
    copy = tmp_path / "slurm" / "code"
    assert (copy / "jobs" / "a.py").read_text() == "A = 2  # not committed\n"
    assert (copy / "jobs" / "new.py").is_file() and not (copy / "jobs" / "cache.pyc").exists()
    assert not (copy / "launch.py").exists()
    assert record["dirty"] is True and "jobs/new.py" in record["untracked"]
    assert sorted(record["changed"]) == ["jobs/a.py", "launch.py"]
    assert "dirty: 2 changed, 1 untracked" in snapshot.describe(record)


def test_a_retake_replaces_the_old_copy_and_says_so(checkout, tmp_path):
    first = snapshot.take(tmp_path / "slurm", root=checkout)
    (checkout / "jobs" / "a.py").write_text("A = 3\n")
    second = snapshot.take(tmp_path / "slurm", root=checkout)
    assert (tmp_path / "slurm" / "code" / "jobs" / "a.py").read_text() == "A = 3\n"
    assert second["replaced"]["taken"] == first["taken"] and "a new snapshot: it replaced" in snapshot.describe(second)
    assert sorted(p.name for p in (tmp_path / "slurm").iterdir()) == ["code", "code.json"]  # no leftovers


def test_outside_git_the_code_folders_are_copied(tmp_path):
    root = tmp_path / "plain"
    for name in ("jobs", "trainer", "configs", "tests"):
        (root / name).mkdir(parents=True)
        (root / name / "x.py").write_text("")
    (root / "trainer" / "__pycache__").mkdir()
    (root / "trainer" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"")
    (root / "launch.py").write_text("")
    record = snapshot.take(tmp_path / "slurm", root=root)
    copy = tmp_path / "slurm" / "code"
    assert sorted(str(p.relative_to(copy)) for p in copy.rglob("*") if p.is_file()) == [
        "configs/x.py", "jobs/x.py", "launch.py", "trainer/x.py"]
    assert record["revision"] is None and record["method"] == "copy"


def test_setup_lines_put_the_snapshot_first_and_hand_the_revision_to_the_trainer(checkout, tmp_path):
    record = snapshot.take(tmp_path / "slurm", root=checkout)
    lines = snapshot.setup_lines(record)
    out = subprocess.run(["bash", "-c", "\n".join(lines) + '\necho "$PYTHONPATH|$PYTHONSAFEPATH|$SEGAN_CODE"'],
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": "/elsewhere"}).stdout.strip()
    path, safe, code = out.split("|")
    assert path == f"{tmp_path / 'slurm' / 'code'}:/elsewhere" and safe == "1"
    assert json.loads(code) == {"revision": record["revision"], "dirty": False, "snapshot": record["snapshot"]}


def test_every_checkpoint_records_the_code_it_was_trained_with(monkeypatch):
    from trainer.core.checkpoint import code_version

    monkeypatch.delenv("SEGAN_CODE", raising=False)  # python -m trainer.train: the checkout's revision
    revision = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    if revision.returncode == 0:
        found = code_version()
        assert found["revision"] == revision.stdout.strip() and found["snapshot"] is None, found
        assert isinstance(found["dirty"], bool)
    monkeypatch.setenv("SEGAN_CODE", json.dumps({"revision": "abc", "dirty": True, "snapshot": "/r/slurm/code",
                                                 "other": [1]}))
    assert code_version() == {"revision": "abc", "dirty": True, "snapshot": "/r/slurm/code"}
    monkeypatch.setenv("SEGAN_CODE", "{not json")
    assert code_version() is None


def test_a_venv_that_is_a_symlink_is_ignored_like_a_venv_folder(checkout, tmp_path):
    """The project's .gitignore: a .venv symlink (to a shared environment) neither makes the snapshot
    dirty nor is copied into it."""
    (checkout / ".gitignore").write_text((ROOT / ".gitignore").read_text())
    git(checkout, "add", "-A")
    git(checkout, "commit", "-qm", "project ignores")
    (tmp_path / "shared-venv").mkdir()
    (checkout / ".venv").symlink_to(tmp_path / "shared-venv")
    record = snapshot.take(tmp_path / "run" / "slurm", root=checkout)
    assert record["dirty"] is False and record["untracked"] == []
    assert not (tmp_path / "run" / "slurm" / "code" / ".venv").exists()
