"""trainer.import_checkpoint, trainer.infer and train.init_from under hostile input (issue 22, cases 10, 12,
14, 16): one line naming the file or value and what to do, exit 2; no traceback, no advice meant for
training or for disabling torch's safe load, no NaN in report.json."""

import json
import os

import numpy as np
import pytest
import soundfile as sf
import torch

from tests.test_import_checkpoint import SMOKE, save_official
from tests.test_infer import SR, creative_run  # noqa: F401 - a module-scoped fixture
from trainer import import_checkpoint, infer
from trainer.core import checkpoint as ckpt
from trainer.core.config import load_config
from trainer.core.exitcodes import EXIT_BAD_INPUT
from trainer.core.registry import build_generator
from trainer.tasks.speech.models import build_discriminator

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def refused(capsys, *args) -> str:
    assert import_checkpoint.main([*map(str, args)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("import_checkpoint: error:"), err
    return err


def test_case10_nan_weights_are_named_without_training_advice(tmp_path, capsys):
    net = save_official("cmgan", tmp_path / "ckpt")
    state = net.state_dict()
    state["dense_encoder.conv_1.0.weight"][0, 0, 0, 0] = float("nan")
    torch.save(state, tmp_path / "ckpt")
    err = refused(capsys, "--format", "cmgan", tmp_path / "ckpt", "--out", tmp_path / "x.pt",
                  "--config", SMOKE["cmgan"])
    assert "non-finite values (NaN or Inf) in 1 tensor(s), e.g. dense_encoder.conv_1.0.weight" in err
    assert "optim.lr" not in err and not (tmp_path / "x.pt").exists()


def test_case12_out_folder_with_force_is_one_line(tmp_path, capsys):
    save_official("cmgan", tmp_path / "ckpt")
    (tmp_path / "folder").mkdir()
    err = refused(capsys, "--format", "cmgan", tmp_path / "ckpt", "--out", tmp_path / "folder", "--force",
                  "--config", SMOKE["cmgan"])
    assert f"--out {tmp_path / 'folder'} is a folder; give the checkpoint's file name" in err
    assert list((tmp_path / "folder").iterdir()) == []


class Payload:
    """Unpickling this would run a shell command (the safe load must refuse it)."""

    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_case16_non_torch_and_malicious_files_are_explained(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("hello world, this is not a checkpoint\n" * 5)
    err = refused(capsys, "--format", "cmgan", tmp_path / "notes.txt", "--out", tmp_path / "x.pt")
    assert "not a PyTorch file, or a truncated or damaged one" in err and "KeyError: 101" not in err
    torch.save({"generator": Payload()}, tmp_path / "evil.pt")
    err = refused(capsys, "--format", "mpsenet", tmp_path / "evil.pt", "--out", tmp_path / "x.pt")
    assert "Python objects other than tensors" in err and "could run code" in err
    assert "weights_only" not in err and err.endswith("check where the file came from")
    assert not (tmp_path / "pwned").exists()


def test_case16_init_from_an_official_file_points_to_import_checkpoint(tmp_path):
    save_official("cmgan", tmp_path / "ckpt")
    cfg = load_config(SMOKE["cmgan"])
    with pytest.raises(ckpt.CheckpointError) as err:
        ckpt.init_weights_from(tmp_path / "ckpt", cfg, build_generator(cfg), build_discriminator(cfg))
    assert "not a toolkit checkpoint" in str(err.value) and "python -m trainer.import_checkpoint" in str(err.value)
    assert "format_version None" not in str(err.value)


@pytest.mark.parametrize("value", ["0", "nan", "-1", "inf"])
def test_case12_infer_max_seconds_must_be_positive(creative_run, tmp_path, capsys, value):  # noqa: F811
    code = infer.main(["--checkpoint", str(creative_run["ckpt"]), "--out-dir", str(tmp_path / "o"), "--device", "cpu",
                       "--max-seconds", value])
    err = capsys.readouterr().err.strip()
    assert code == EXIT_BAD_INPUT and err == f"error: --max-seconds {float(value)} must be a positive number of seconds"


def test_case14_infer_nan_input_is_refused_and_silence_is_not_called_a_mix(creative_run, tmp_path, capsys):  # noqa: F811
    rng = np.random.default_rng(0)
    piece = (0.1 * rng.standard_normal(SR)).astype(np.float32)
    broken = piece.copy()
    broken[10] = np.nan
    sf.write(tmp_path / "nan.wav", broken, SR, subtype="FLOAT")
    sf.write(tmp_path / "piece.wav", piece, SR, subtype="FLOAT")
    sf.write(tmp_path / "silent.wav", np.zeros(SR, np.float32), SR, subtype="FLOAT")
    base = ["--checkpoint", str(creative_run["ckpt"]), "--device", "cpu"]
    code = infer.main([*base, "--out-dir", str(tmp_path / "a"), "--input", str(tmp_path / "nan.wav"),
                       "--target", str(tmp_path / "piece.wav")])
    err = capsys.readouterr().err.strip()
    assert code == EXIT_BAD_INPUT and err == f"error: {tmp_path / 'nan.wav'}: 1 non-finite samples (NaN or Inf); " \
                                             "repair the file or give another"
    assert infer.main([*base, "--out-dir", str(tmp_path / "b"), "--input", str(tmp_path / "silent.wav"),
                       "--target", str(tmp_path / "piece.wav")]) == 0
    (row,) = json.loads((tmp_path / "b/report.json").read_text())  # strict JSON: no NaN
    assert row["alert"] == "silent input: nothing to compare (correlations are undefined)"
    assert "silent input" in capsys.readouterr().out
