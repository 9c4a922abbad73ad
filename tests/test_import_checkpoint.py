"""python -m trainer.import_checkpoint: official CMGAN / MP-SENet files -> toolkit checkpoints that evaluate,
enhance and train.init_from accept.

The official files here are random weights saved in the official layouts (CMGAN: a plain TSCNet
state dict; MP-SENet: {"generator": MPNet state dict}), at the smoke configs' small sizes (same
keys, smaller tensors); no download. The enhanced files are compared with the references' inference
steps written out here (CMGAN evaluation.py's enhance_one_track, MP-SENet inference.py); the
comparison with the authors' own scripts is benchmarks/check_reference_equivalence.py.
"""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from trainer import enhance as enhance_cmd
from trainer import evaluate as evaluate_cmd
from trainer import import_checkpoint
from trainer.core import checkpoint as ckpt
from trainer.data.synth import babble_like_noise, mix_at_snr, synthesize_speech
from trainer.tasks.speech.models import cmgan, mpsenet

SR = 16000
pytestmark = pytest.mark.usefixtures("one_torch_thread")
SMOKE = {"cmgan": "configs/cmgan_smoke.yaml", "mpsenet": "configs/mpsenet_smoke.yaml"}


def official_network(fmt: str, seed: int = 0) -> torch.nn.Module:
    """A network of the smoke config's size with random (not default) weights, as the authors build it."""
    torch.manual_seed(seed)
    net = cmgan.CMGANNet(num_channel=8, num_blocks=1) if fmt == "cmgan" else mpsenet.MPSENetNet(8, num_tsblocks=1)
    with torch.no_grad():
        for tensor in net.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(0.05 * torch.randn(tensor.shape))
    return net.eval()


def save_official(fmt: str, path, seed: int = 0, wrapped: bool = True) -> torch.nn.Module:
    net = official_network(fmt, seed)
    payload = {"generator": net.state_dict()} if fmt == "mpsenet" and wrapped else net.state_dict()
    torch.save(payload, path)
    return net


def noisy_wave(seconds: float, seed: int, rms: float = 0.05) -> np.ndarray:
    speech = np.resize(synthesize_speech("The birch canoe slid on the smooth planks.", SR, seed=seed),
                       int(seconds * SR))
    noisy = mix_at_snr(speech, babble_like_noise(len(speech), SR, seed=seed), 5.0)
    return (noisy * rms / np.sqrt(np.mean(noisy**2))).astype(np.float32)


@torch.no_grad()
def reference_enhance(fmt: str, net: torch.nn.Module, noisy: np.ndarray) -> np.ndarray:
    """The reference inference steps (CMGAN enhance_one_track below 16 s, MP-SENet inference.py) in torch 2."""
    x = torch.from_numpy(noisy)[None]
    c = torch.sqrt(x.size(-1) / torch.sum(x**2.0, dim=-1))
    x = x * c
    if fmt == "cmgan":
        length = x.size(-1)
        x = torch.cat([x, x[:, :math.ceil(length / 100) * 100 - length]], dim=-1)
        window = torch.hamming_window(400)
        spec = torch.stft(x, 400, 100, window=window, onesided=True, return_complex=True)
        spec = torch.polar(spec.abs() ** 0.3, spec.angle())  # power_compress
        real, imag = net(torch.view_as_real(spec).permute(0, 3, 2, 1))
        est = torch.complex(real, imag)[:, 0].transpose(1, 2)
        est = torch.polar(est.abs() ** (1 / 0.3), est.angle())  # power_uncompress
        return (torch.istft(est, 400, 100, window=window, onesided=True) / c)[0, :length].numpy()
    mag, pha, _ = mpsenet.mag_pha_stft(x)
    amp_g, pha_g, _ = net(mag, pha)
    return (mpsenet.mag_pha_istft(amp_g, pha_g) / c)[0].numpy()  # (T // 100) * 100 samples


def test_parts_and_layouts(tmp_path):
    for fmt in ("cmgan", "mpsenet"):
        source = save_official(fmt, tmp_path / fmt)
        out = tmp_path / f"{fmt}.pt"
        assert import_checkpoint.main(["--format", fmt, str(tmp_path / fmt), "--out", str(out),
                                       "--config", SMOKE[fmt]]) == 0
        state = ckpt.load(out)
        assert state["discriminator"] == {} and state["opt_g"] == {} and state["step"] == 0
        assert state["config"]["model"]["name"] == fmt and state["imported_from"]["format"] == fmt
        generator, cfg, info = ckpt.load_generator(out, task="speech_enhancement")
        for key, value in source.state_dict().items():
            assert torch.equal(generator.state_dict()["net." + key], value), key
    bare = tmp_path / "bare"
    save_official("mpsenet", bare, wrapped=False)  # a bare MPNet state dict is accepted too
    assert import_checkpoint.main(["--format", "mpsenet", str(bare), "--out", str(tmp_path / "bare.pt"),
                                   "--config", SMOKE["mpsenet"]]) == 0


@pytest.mark.parametrize("fmt", ["cmgan", "mpsenet"])
def test_enhance_and_evaluate_an_imported_checkpoint_like_the_reference_scripts(tmp_path, fmt):
    net = save_official(fmt, tmp_path / "official", seed=1)
    out = tmp_path / "imported.pt"
    assert import_checkpoint.main(["--format", fmt, str(tmp_path / "official"), "--out", str(out),
                                   "--config", SMOKE[fmt]]) == 0
    noisy_dir, clean_dir, enhanced_dir = tmp_path / "noisy", tmp_path / "clean", tmp_path / "enhanced"
    noisy_dir.mkdir()
    clean_dir.mkdir()
    # Two files of one length: batched together by a batch-independent model, one per call for MP-SENet.
    files = {"a.wav": noisy_wave(1.2, 0), "b.wav": noisy_wave(1.2, 1, rms=0.2), "c.wav": noisy_wave(0.81, 2, rms=0.01)}
    for name, wave in files.items():
        sf.write(noisy_dir / name, wave, SR, subtype="FLOAT")
        sf.write(clean_dir / name, np.resize(synthesize_speech("The birch canoe.", SR, seed=3), len(wave)), SR)
    assert enhance_cmd.main(["--checkpoint", str(out), "--noisy-dir", str(noisy_dir), "--out-dir", str(enhanced_dir),
                             "--device", "cpu", "--batch-size", "4", "--no-progress"]) == 0
    for name, wave in files.items():
        ours, rate = sf.read(enhanced_dir / name, dtype="float32")
        reference = reference_enhance(fmt, net, wave)
        assert rate == SR and len(ours) == len(wave)
        np.testing.assert_allclose(ours[:len(reference)], reference, rtol=0, atol=1e-4 * np.abs(reference).max())
    scores = tmp_path / "scores.json"
    assert evaluate_cmd.main(["--checkpoint", str(out), "--clean-dir", str(clean_dir), "--noisy-dir", str(noisy_dir),
                              "--json", str(scores), "--workers", "1", "--no-progress", "--device", "cpu"]) == 0
    summary = json.loads(scores.read_text())["summaries"]
    assert any(s.get("num_valid") == 3 for name, s in summary.items() if name != "noisy"), summary


def test_wrong_or_mismatched_files_are_refused_in_one_line(tmp_path, repo_root, capsys):
    save_official("mpsenet", tmp_path / "g_best_vb")
    save_official("cmgan", tmp_path / "ckpt")

    def refused(*args) -> str:
        assert import_checkpoint.main([*map(str, args)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("import_checkpoint: error:"), err
        return err

    err = refused("--format", "cmgan", tmp_path / "g_best_vb", "--out", tmp_path / "x.pt", "--config", SMOKE["cmgan"])
    assert "not a cmgan checkpoint" in err and "non-tensor entries: generator" in err
    err = refused("--format", "mpsenet", tmp_path / "ckpt", "--out", tmp_path / "x.pt", "--config", SMOKE["mpsenet"])
    assert "missing dense_encoder.dense_conv_1.0.weight" in err and "unexpected dense_encoder.conv_1.0.weight" in err
    err = refused("--format", "cmgan", tmp_path / "ckpt", "--out", tmp_path / "x.pt")  # preset: 64 channels, 4 blocks
    assert ("missing TSCB_2." in err
            and "different shapes dense_encoder.conv_1.0.weight (8, 3, 1, 1) vs (64, 3, 1, 1)" in err)
    err = refused("--format", "cmgan", tmp_path / "ckpt", "--out", tmp_path / "x.pt", "--config", SMOKE["mpsenet"])
    assert "model.name is 'mpsenet'" in err
    (tmp_path / "junk").write_bytes(b"not a checkpoint")
    assert "not a readable checkpoint" in refused("--format", "cmgan", tmp_path / "junk", "--out", tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()
    proc = subprocess.run([sys.executable, "-m", "trainer.import_checkpoint", "--format", "cmgan",
                           str(tmp_path / "none"), "--out", str(tmp_path / "x.pt")], cwd=repo_root,
                          capture_output=True, text=True, timeout=300)
    assert (proc.returncode == 2
            and proc.stderr.strip() == f"import_checkpoint: error: {tmp_path / 'none'}: no such file")


@pytest.mark.parametrize("fmt", ["cmgan", "mpsenet"])
def test_train_init_from_takes_an_imported_checkpoint(tmp_path, fmt):
    """What the training loop does with ``train.init_from`` (trainer/core/loop.py): the new run's networks
    built from its config, the imported generator loaded into them, the discriminator left fresh."""
    from trainer.core.config import load_config
    from trainer.core.registry import build_generator
    from trainer.tasks.speech.models import build_discriminator

    net = save_official(fmt, tmp_path / "official", seed=2)
    out = tmp_path / "imported.pt"
    assert import_checkpoint.main(["--format", fmt, str(tmp_path / "official"), "--out", str(out),
                                   "--config", SMOKE[fmt]]) == 0
    cfg = load_config(SMOKE[fmt], [f"train.init_from={out}", "optim.lr=1e-4"])  # fine-tuning may change the lr
    generator, discriminator = build_generator(cfg), build_discriminator(cfg)
    fresh_d = {k: v.clone() for k, v in discriminator.state_dict().items()}
    loaded = ckpt.init_weights_from(out, cfg, generator, discriminator)
    assert loaded == "generator (the checkpoint has no discriminator: it starts fresh)"
    for key, value in net.state_dict().items():
        assert torch.equal(generator.state_dict()["net." + key], value), key
    assert all(torch.equal(discriminator.state_dict()[k], v) for k, v in fresh_d.items())
    other = load_config(SMOKE[fmt], ["model.num_layers=2"])
    with pytest.raises(ckpt.CheckpointError, match="model.num_layers: checkpoint 1, config 2"):
        ckpt.init_weights_from(out, other, build_generator(other), build_discriminator(other))
