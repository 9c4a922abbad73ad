"""python -m trainer.enhance on real audio folders: chunked overlap-add, skip-done, bad files, refusals."""

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from trainer.core import checkpoint as ckpt
from trainer.core.config import load_config, to_dict
from trainer.core.registry import build_generator
from trainer.data.synth import babble_like_noise, mix_at_snr, synthesize_speech
from trainer.tasks.speech.inference import ChunkedEnhancer, chunk_starts, enhance
from trainer.tasks.speech.models import build_discriminator

SR = 16000
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_generator(seed: int, *, identity: bool = False):
    cfg = load_config("configs/smoke.yaml")
    torch.manual_seed(seed)
    generator = build_generator(cfg).eval()
    if not identity:  # an untrained BSRNN returns its input; perturb it into a real filter
        with torch.no_grad():
            for p in generator.parameters():
                p.add_(0.05 * torch.randn_like(p))
    return generator, cfg


def save_checkpoint(path, seed: int):
    generator, cfg = tiny_generator(seed)
    state = {"format_version": ckpt.FORMAT_VERSION, "config": to_dict(cfg), "generator": generator.state_dict(),
             "discriminator": build_discriminator(cfg).state_dict(), "opt_g": {}, "opt_d": {}, "epoch": 1,
             "step": 7, "batches_done": 0, "sampler": {}, "rng": [], "best": {}, "versions": ckpt.versions()}
    ckpt.save_atomic(state, path)
    return generator, cfg


def noisy_speech(seconds: float, seed: int) -> np.ndarray:
    speech = synthesize_speech("The birch canoe slid on the smooth planks.", SR, seed=seed)
    speech = np.resize(speech, int(seconds * SR))
    return mix_at_snr(speech, babble_like_noise(len(speech), SR, seed=seed), 5.0).astype(np.float32)


def test_chunk_starts_cover_the_signal_and_end_at_its_end():
    assert chunk_starts(100, 100, 10) == [0] and chunk_starts(50, 100, 10) == [0]
    starts = chunk_starts(1000, 300, 50)
    assert starts == [0, 250, 500, 700] and starts[-1] + 300 == 1000


def test_a_signal_shorter_than_a_chunk_equals_the_one_pass_output():
    generator, cfg = tiny_generator(1)
    noisy = noisy_speech(1.3, seed=1)
    scale = 1.0 / np.sqrt(np.mean(noisy.astype(np.float64) ** 2) + 1e-8)
    with torch.no_grad():
        one_pass = generator(torch.from_numpy(noisy * np.float32(scale))[None])["wave"][0].numpy() / scale
    np.testing.assert_allclose(enhance(generator, cfg, noisy, SR, chunk_seconds=2.0, overlap_seconds=0.5),
                               one_pass, rtol=0, atol=1e-6)


def test_long_signals_go_through_in_bounded_chunks_and_overlap_add_exactly():
    generator, cfg = tiny_generator(2, identity=True)  # untrained: the model returns its input
    lengths = []
    forward = generator.forward
    generator.forward = lambda wave: (lengths.append(wave.shape[-1]), forward(wave))[1]
    noisy = noisy_speech(23.7, seed=2)
    out = enhance(generator, cfg, noisy, SR, chunk_seconds=4.0, overlap_seconds=0.5)
    assert max(lengths) == 4 * SR and len(lengths) == len(chunk_starts(len(noisy), 4 * SR, SR // 2))
    assert out.shape == noisy.shape
    np.testing.assert_allclose(out, noisy, atol=2e-4)  # the cross-fade weights sum to one everywhere


def test_batched_chunks_of_several_signals_equal_one_at_a_time():
    generator, cfg = tiny_generator(3)
    signals = [noisy_speech(s, seed=i) for i, s in enumerate((5.5, 1.0, 1.0, 9.1))]
    one = ChunkedEnhancer(generator, cfg, chunk_seconds=2.0, overlap_seconds=0.25, batch_size=1)
    many = ChunkedEnhancer(generator, cfg, chunk_seconds=2.0, overlap_seconds=0.25, batch_size=4)
    items = [(i, s, SR) for i, s in enumerate(signals)]
    alone = dict(one.enhance_many(items))
    batched = dict(many.enhance_many(items))
    assert sorted(batched) == [0, 1, 2, 3]
    for i in range(4):
        np.testing.assert_allclose(batched[i], alone[i], atol=1e-5)


def run_enhance(repo_root, *args):
    return subprocess.run([sys.executable, "-m", "trainer.enhance", *map(str, args), "--no-progress"],
                          cwd=repo_root, capture_output=True, text=True, timeout=600)


def test_cli_enhances_a_folder_skips_done_files_and_lists_bad_ones(tmp_path, repo_root):
    noisy_dir, out_dir = tmp_path / "noisy", tmp_path / "out"
    (noisy_dir / "spk").mkdir(parents=True)
    sf.write(noisy_dir / "a.wav", noisy_speech(1.2, 0), SR, subtype="PCM_16")
    sf.write(noisy_dir / "spk/b.flac", noisy_speech(3.5, 1), SR)
    sf.write(noisy_dir / "c8k.wav", noisy_speech(1.0, 2)[::2], 8000)
    (noisy_dir / "broken.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEnot really a wav file")
    save_checkpoint(tmp_path / "g.pt", seed=4)
    proc = run_enhance(repo_root, "--checkpoint", tmp_path / "g.pt", "--noisy-dir", noisy_dir, "--out-dir", out_dir,
                       "--chunk-seconds", "2", "--overlap-seconds", "0.5", "--device", "cpu")
    assert proc.returncode == 2, proc.stderr
    assert f"{noisy_dir / 'broken.wav'}:" in proc.stderr and "Traceback" not in proc.stderr
    written = sorted(p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*.wav"))
    assert written == ["a.wav", "c8k.wav", "spk/b.wav"]
    for name, source in (("a.wav", "a.wav"), ("spk/b.wav", "spk/b.flac"), ("c8k.wav", "c8k.wav")):
        got, rate = sf.read(out_dir / name)
        want, want_rate = sf.read(noisy_dir / source)
        assert rate == want_rate and len(got) == len(want) and np.isfinite(got).all()
    assert json.loads((out_dir / "enhance.json").read_text())["step"] == 7
    before = (out_dir / "a.wav").stat().st_mtime_ns
    again = run_enhance(repo_root, "--checkpoint", tmp_path / "g.pt", "--noisy-dir", noisy_dir, "--out-dir", out_dir,
                        "--chunk-seconds", "2", "--overlap-seconds", "0.5", "--device", "cpu")
    assert "3 already enhanced, 1 to do" in again.stderr and (out_dir / "a.wav").stat().st_mtime_ns == before
    save_checkpoint(tmp_path / "other.pt", seed=5)
    other = run_enhance(repo_root, "--checkpoint", tmp_path / "other.pt", "--noisy-dir", noisy_dir,
                        "--out-dir", out_dir, "--chunk-seconds", "2", "--overlap-seconds", "0.5")
    assert other.returncode == 2 and "holds files enhanced with other settings (checkpoint" in other.stderr


def test_bad_arguments_are_one_line_errors(tmp_path, repo_root):
    (tmp_path / "in").mkdir()
    missing = run_enhance(repo_root, "--checkpoint", tmp_path / "none.pt", "--noisy-dir", tmp_path / "in",
                          "--out-dir", tmp_path / "out")
    assert missing.returncode == 2 and missing.stderr.strip().endswith("none.pt: no such file")
    (tmp_path / "x.pt").write_bytes(b"not checked before the arguments")
    same = run_enhance(repo_root, "--checkpoint", tmp_path / "x.pt", "--noisy-dir", tmp_path / "in",
                       "--out-dir", tmp_path / "in")
    assert same.returncode == 2 and "must differ from --noisy-dir" in same.stderr
    chunks = run_enhance(repo_root, "--checkpoint", tmp_path / "x.pt", "--noisy-dir", tmp_path / "in",
                         "--out-dir", tmp_path / "out", "--chunk-seconds", "1", "--overlap-seconds", "0.6")
    assert chunks.returncode == 2 and "must exceed twice --overlap-seconds" in chunks.stderr
