"""trainer.infer on a creative-agent checkpoint: validation pairs packed by prepare, and a user's pair."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from trainer import infer
from trainer.core import checkpoint
from trainer.core.config import load_config, to_dict
from trainer.core.registry import build_generator
from trainer.data import synth
from trainer.data.demo import write_creative_pairs
from trainer.data.pack import prepare
from trainer.tasks.creative import diagnostics
from trainer.tasks.creative.models import build_discriminator as build_creative_discriminator

SR = 8000


@pytest.fixture(scope="module")
def creative_run(tmp_path_factory):
    """Pairs packed with prepare (real HDF5) and a checkpoint in the training core's format."""
    root = tmp_path_factory.mktemp("creative_infer")
    write_creative_pairs(root, 3, 1.0, SR, seed=2, speaker="piece")
    prepare(root / "target", root / "input", root / "packed", signals=("target", "input"), sample_rate=SR,
            progress=False)
    cfg = load_config(None, [
        "task=creative_agent", "model.name=creative_agent", f"data.train_dir={root / 'packed'}",
        f"data.valid_dir={root / 'packed'}", f"data.sample_rate={SR}", "data.crop_seconds=0.75",
        "data.normalize=false", "stft.n_fft=128", "stft.hop_length=64", "model.dim=16", "model.num_heads=2",
        "model.num_transformer_layers=1", "model.num_stages=2", "discriminator.num_channels=4"])
    torch.manual_seed(0)
    generator, disc = build_generator(cfg), build_creative_discriminator(cfg)
    state = {"format_version": checkpoint.FORMAT_VERSION, "config": to_dict(cfg),
             "generator": generator.state_dict(), "discriminator": disc.state_dict(), "opt_g": {}, "opt_d": {},
             "epoch": 0, "step": 0, "batches_done": 0, "sampler": {}, "rng": [checkpoint.capture_rng()],
             "best": {}, "versions": checkpoint.versions()}
    checkpoint.save_atomic(state, root / "last.pt")
    return {"root": root, "ckpt": root / "last.pt", "generator": generator.eval(), "cfg": cfg}


def test_validation_samples_are_written_and_reported(creative_run, tmp_path, capsys):
    out_dir = tmp_path / "listen"
    assert infer.main(["--checkpoint", str(creative_run["ckpt"]), "--num-samples", "2",
                       "--out-dir", str(out_dir), "--device", "cpu"]) == 0
    rows = json.loads((out_dir / "report.json").read_text())
    assert [r["sample"] for r in rows] == [0, 1]
    printed = capsys.readouterr().out
    for row in rows:
        assert row["input_name"] == row["target_name"]  # true pairs without --shuffle-targets
        assert row["alert"] in (diagnostics.ALERT_TARGET, diagnostics.ALERT_INPUT, diagnostics.ALERT_MIX)
        assert row["alert"] in printed and f"{row['corr_target']:.3f}" in printed
        waves = {role: sf.read(path, dtype="float32") for role, path in row["files"].items()}
        assert {rate for _, rate in waves.values()} == {SR}
        assert {len(w) for w, _ in waves.values()} == {int(0.75 * SR)}  # centre crop of data.crop_seconds
        # the report's correlations are those of the written files
        output, inp = torch.from_numpy(waves["output"][0])[None], torch.from_numpy(waves["input"][0])[None]
        assert float(diagnostics.pearson(output, inp)[0]) == pytest.approx(row["corr_input"], abs=1e-4)


def test_more_samples_than_exist_says_how_many_were_rendered(creative_run, tmp_path, capsys):
    """Issue 22 item 19: --num-samples 1000 silently rendered the few that exist."""
    out_dir = tmp_path / "listen"
    assert infer.main(["--checkpoint", str(creative_run["ckpt"]), "--num-samples", "1000",
                       "--out-dir", str(out_dir), "--device", "cpu", "--max-seconds", "0.25"]) == 0
    rendered = len(json.loads((out_dir / "report.json").read_text()))
    assert 1 <= rendered < 1000
    assert (f"note: --num-samples 1000: the validation split holds {rendered} item(s); rendered all {rendered}"
            in capsys.readouterr().err)


def test_shuffled_targets_pair_different_pieces(creative_run, tmp_path):
    out_dir = tmp_path / "shuffled"
    assert infer.main(["--checkpoint", str(creative_run["ckpt"]), "--num-samples", "3", "--shuffle-targets",
                       "--out-dir", str(out_dir), "--device", "cpu"]) == 0
    rows = json.loads((out_dir / "report.json").read_text())
    assert len(rows) == 3 and all(r["input_name"] != r["target_name"] for r in rows)


def test_own_pair_is_mixed_to_mono_resampled_and_matches_the_model(creative_run, tmp_path):
    inputs, targets = synth.synthetic_pairs(1, 0.5, 16000, seed=5)
    stereo = np.stack([inputs[0].numpy(), inputs[0].numpy()], axis=1)
    sf.write(tmp_path / "drums.wav", stereo, 16000)
    sf.write(tmp_path / "piano.flac", targets[0].numpy(), 16000)
    out_dir = tmp_path / "own"
    assert infer.main(["--checkpoint", str(creative_run["ckpt"]), "--input", str(tmp_path / "drums.wav"),
                       "--target", str(tmp_path / "piano.flac"), "--out-dir", str(out_dir), "--device", "cpu"]) == 0
    (row,) = json.loads((out_dir / "report.json").read_text())
    written_in, rate = sf.read(row["files"]["input"], dtype="float32")
    written_tgt, _ = sf.read(row["files"]["target"], dtype="float32")
    assert rate == SR and len(written_in) == 4000
    with torch.no_grad():
        expected = creative_run["generator"](torch.from_numpy(written_in)[None], torch.from_numpy(written_tgt)[None])
    written_out, _ = sf.read(row["files"]["output"], dtype="float32")
    np.testing.assert_allclose(written_out, expected["wave"][0].numpy(), atol=1e-5)


def test_wrong_inputs_are_one_line_errors(creative_run, tmp_path, capsys):
    assert infer.main(["--checkpoint", str(tmp_path / "none.pt"), "--out-dir", str(tmp_path)]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    missing = tmp_path / "missing.wav"
    assert infer.main(["--checkpoint", str(creative_run["ckpt"]), "--input", str(missing), "--target",
                       str(missing), "--out-dir", str(tmp_path)]) == 2
    assert "missing.wav: cannot read audio" in capsys.readouterr().err
    speech = load_config(None, ["data.demo=true"])
    state = torch.load(creative_run["ckpt"], weights_only=True)
    state["config"] = to_dict(speech)
    checkpoint.save_atomic(state, tmp_path / "speech.pt")
    assert infer.main(["--checkpoint", str(tmp_path / "speech.pt"), "--out-dir", str(tmp_path)]) == 2
    assert "needs 'creative_agent' checkpoints (use python -m trainer.evaluate)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        infer.main(["--checkpoint", str(creative_run["ckpt"]), "--input", "a.wav", "--out-dir", str(tmp_path)])


def test_normalisation_follows_training(creative_run, tmp_path):
    """data.normalize: unit-RMS input; a true pair's target scaled by the input's factor, an
    unrelated target to unit RMS on its own (as the data loader does with shuffle_targets)."""
    cfg = load_config(None, ["task=creative_agent", "model.name=creative_agent", "data.demo=true",
                             f"data.sample_rate={SR}", "data.normalize=true", "stft.n_fft=128",
                             "stft.hop_length=64", "model.dim=16", "model.num_heads=2",
                             "model.num_transformer_layers=1", "model.num_stages=2"])
    inputs, targets = synth.synthetic_pairs(1, 0.25, SR, seed=7)
    wave_in, wave_tgt = inputs[0].numpy() * 0.1, targets[0].numpy() * 0.3
    pairs = [{"input": wave_in, "target": wave_tgt, "input_name": "a", "target_name": "a", "paired": True},
             {"input": wave_in, "target": wave_tgt, "input_name": "a", "target_name": "b", "paired": False}]
    rows = infer.run_pairs(creative_run["generator"], cfg, pairs, tmp_path, torch.device("cpu"))
    rms = {}
    for row in rows:
        for role in ("input", "target"):
            wave, _ = sf.read(row["files"][role], dtype="float32")
            rms[row["sample"], role] = float(np.sqrt(np.mean(np.square(wave, dtype=np.float64))))
    assert rms[0, "input"] == pytest.approx(1.0, rel=2e-3) and rms[1, "input"] == pytest.approx(1.0, rel=2e-3)
    assert rms[0, "target"] == pytest.approx(3.0, rel=2e-3)  # the pair's level ratio is kept
    assert rms[1, "target"] == pytest.approx(1.0, rel=2e-3)


def test_empty_checkpoint_is_one_line(tmp_path, capsys):
    """Issue item 9: a 0-byte checkpoint raised IndexError."""
    (tmp_path / "last.pt").write_bytes(b"")
    assert infer.main(["--checkpoint", str(tmp_path / "last.pt"), "--out-dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "last.pt: " in err and "empty" in err and len(err.strip().splitlines()) == 1
