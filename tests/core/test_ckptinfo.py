"""The checkpoint's JSON sidecar: written with every save, read without torch, trusted only while it
describes the checkpoint file beside it."""
import json

import torch

from trainer.core import checkpoint as ckpt
from trainer.core import ckptinfo
from trainer.core.io import atomic_write_group


def _state(step, best=None):
    state = {key: {} for key in ckpt.REQUIRED_KEYS}
    state.update(format_version=ckpt.FORMAT_VERSION, epoch=2, step=step, batches_done=0,
                 rng=[ckpt.capture_rng()], generator={"w": torch.arange(4.0)}, versions=ckpt.versions(),
                 best=best or {}, config={"task": "speech_enhancement", "run": {"seed": 1}})
    return state


def test_every_kept_checkpoint_of_a_save_gets_a_sidecar_with_its_facts(tmp_path):
    ckpt.save_run_checkpoints(_state(12, {"pesq": 2.5}), tmp_path, ("pesq",))
    for name in ("last", "best_pesq"):
        info = ckptinfo.read(tmp_path / f"{name}.pt")
        assert info is not None, name
        assert (info["step"], info["epoch"], info["best"]) == (12, 2, {"pesq": 2.5})
        assert info["config_sha256"] == ckptinfo.config_digest({"run": {"seed": 1}, "task": "speech_enhancement"})
    assert ckpt.load(tmp_path / "last.pt")["step"] == 12  # the checkpoint itself is unchanged


def test_a_sidecar_older_than_its_checkpoint_is_not_trusted(tmp_path):
    """A crash between a checkpoint's rename and its sidecar's: the old sidecar must not report the
    previous save's step as the new checkpoint's."""
    ckpt.save_run_checkpoints(_state(10), tmp_path, ())
    atomic_write_group([tmp_path / "last.pt"], ckpt.serialize(_state(20), tmp_path / "last.pt"))
    assert ckptinfo.read(tmp_path / "last.pt") is None
    ckpt.save_run_checkpoints(_state(30), tmp_path, ())
    assert ckptinfo.read(tmp_path / "last.pt")["step"] == 30


def test_missing_or_malformed_sidecars_read_as_unknown(tmp_path):
    assert ckptinfo.read(tmp_path / "last.pt") is None  # no checkpoint at all
    ckpt.save_run_checkpoints(_state(5), tmp_path, ())
    sidecar = ckptinfo.sidecar_path(tmp_path / "last.pt")
    good = json.loads(sidecar.read_text())
    for text in ("", "{not json", "[1, 2]", json.dumps({**good, "format": 99})):
        sidecar.write_text(text)
        assert ckptinfo.read(tmp_path / "last.pt") is None, text
    sidecar.unlink()
    assert ckptinfo.read(tmp_path / "last.pt") is None


def test_the_sidecar_reader_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, trainer.core.ckptinfo, jobs.runs; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
