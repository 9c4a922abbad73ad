"""trainer.enhance / trainer.evaluate --checkpoint under hostile input (issue 22, cases 1, 2, 3, 6, 7, 9, 12,
18): the right result, or one line naming the file and what to do, the other files done, exit 2 (4 for a
full disk), nothing already written lost. Real audio files, real smoke checkpoints, the real commands
(in-process: ``main(argv)``, the way the console runs them, minus the interpreter start)."""

import errno
import json
import os
import subprocess

import numpy as np
import pytest
import soundfile as sf
import torch

from tests.test_enhance import noisy_speech
from trainer import enhance as enhance_cmd
from trainer import evaluate as evaluate_cmd
from trainer.core import checkpoint as ckpt
from trainer.core.config import load_config, to_dict
from trainer.core.exitcodes import EXIT_BAD_INPUT, EXIT_DISK_FULL, EXIT_FINISHED
from trainer.core.registry import build_generator
from trainer.tasks.speech import chunking
from trainer.tasks.speech.models import build_discriminator

SR = 16000
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def cmgan_ckpt(tmp_path_factory):
    """The CMGAN smoke network (22 k parameters) with random weights, as a training checkpoint."""
    cfg = load_config("configs/cmgan_smoke.yaml")
    torch.manual_seed(0)
    state = {"format_version": ckpt.FORMAT_VERSION, "config": to_dict(cfg),
             "generator": build_generator(cfg).state_dict(),
             "discriminator": build_discriminator(cfg).state_dict(), "opt_g": {}, "opt_d": {}, "epoch": 1, "step": 3,
             "batches_done": 0, "sampler": {}, "rng": [], "best": {}, "versions": ckpt.versions()}
    path = tmp_path_factory.mktemp("ckpt") / "cmgan.pt"
    ckpt.save_atomic(state, path)
    return path


def enhance(capsys, checkpoint, noisy_dir, out_dir, *extra) -> tuple[int, list[str]]:
    code = enhance_cmd.main(["--checkpoint", str(checkpoint), "--noisy-dir", str(noisy_dir), "--out-dir", str(out_dir),
                             "--device", "cpu", "--no-progress", *map(str, extra)])
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return code, [line for line in err.splitlines() if line.startswith("enhance:")]


def write(folder, name, wave, rate=SR, subtype="FLOAT"):
    (folder / name).parent.mkdir(parents=True, exist_ok=True)
    sf.write(folder / name, wave, rate, subtype=subtype)


def outputs(out_dir) -> list[str]:
    return sorted(p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*.wav"))


def test_case1_x_wav_and_x_flac_are_both_listed_and_never_written(tmp_path, capsys, bsrnn_ckpt):
    noisy, out = tmp_path / "in", tmp_path / "out"
    write(noisy, "x.wav", noisy_speech(0.5, 1))
    write(noisy, "x.flac", noisy_speech(0.5, 2), subtype="PCM_16")
    write(noisy, "y.wav", noisy_speech(0.5, 3))
    for _ in range(2):  # a re-run counts neither as done
        code, lines = enhance(capsys, bsrnn_ckpt, noisy, out)
        assert code == EXIT_BAD_INPUT and outputs(out) == ["y.wav"]
        assert [line.split(": ", 2)[1] for line in lines] == [str(noisy / "x.flac"), str(noisy / "x.wav")]
        assert all("x.flac and x.wav would both be written to" in line and "rename one" in line for line in lines)


def test_case2_out_dir_inside_noisy_dir_is_refused_before_any_work(tmp_path, capsys, bsrnn_ckpt):
    noisy = tmp_path / "in"
    write(noisy, "a.wav", noisy_speech(0.5, 1))
    code, lines = enhance(capsys, bsrnn_ckpt, noisy, noisy / "enhanced")
    assert code == EXIT_BAD_INPUT and len(lines) == 1 and "is inside --noisy-dir" in lines[0]
    assert not (noisy / "enhanced").exists()


def test_case3_non_finite_inputs_are_listed_and_a_huge_finite_input_scales(tmp_path, capsys, bsrnn_ckpt):
    noisy, out = tmp_path / "in", tmp_path / "out"
    wave = noisy_speech(0.8, 5)
    for name, bad in (("nan.wav", np.nan), ("inf.wav", np.inf)):
        broken = wave.copy()
        broken[4000] = bad
        write(noisy, name, broken)
    write(noisy, "plain.wav", wave)
    write(noisy, "loud.wav", wave * np.float32(1e19))  # finite; its float32 energy overflows
    code, lines = enhance(capsys, bsrnn_ckpt, noisy, out)
    assert code == EXIT_BAD_INPUT and outputs(out) == ["loud.wav", "plain.wav"]
    assert len(lines) == 2 and all("1 non-finite samples (NaN or Inf), the first at 0.250 s" in x for x in lines)
    plain, loud = sf.read(out / "plain.wav")[0], sf.read(out / "loud.wav")[0]
    assert np.isfinite(loud).all()
    np.testing.assert_allclose(loud / 1e19, plain, rtol=0, atol=1e-4 * np.abs(plain).max())


def test_case6_a_too_short_file_is_listed_and_the_others_are_enhanced(tmp_path, capsys, bsrnn_ckpt):
    noisy, out = tmp_path / "in", tmp_path / "out"
    write(noisy, "a_short.wav", noisy_speech(0.5, 1)[:150])
    write(noisy, "b.wav", noisy_speech(0.5, 2))
    write(noisy, "c_short8k.wav", noisy_speech(0.5, 3)[:100], rate=8000)
    code, lines = enhance(capsys, bsrnn_ckpt, noisy, out)
    assert code == EXIT_BAD_INPUT and outputs(out) == ["b.wav"]
    assert "a_short.wav: too short: 150 samples (9.4 ms) at 16000 Hz; the model needs at least 201" in lines[0]
    assert "c_short8k.wav: too short: 100 samples (12.5 ms) at 8000 Hz" in lines[1] and len(lines) == 2


def test_case6_evaluate_checkpoint_scores_the_others_when_a_pair_is_too_short(tmp_path, capsys, bsrnn_ckpt):
    clean, noisy = tmp_path / "clean", tmp_path / "noisy"
    for name, seconds in (("short.wav", 150 / SR), ("long.wav", 1.0)):
        write(clean, name, noisy_speech(1.0, 7)[:int(seconds * SR)])
        write(noisy, name, noisy_speech(1.0, 8)[:int(seconds * SR)])
    code = evaluate_cmd.main(["--checkpoint", str(bsrnn_ckpt), "--clean-dir", str(clean), "--noisy-dir", str(noisy),
                              "--workers", "1", "--no-progress", "--device", "cpu", "--json", str(tmp_path / "s.json")])
    captured = capsys.readouterr()
    assert code == EXIT_FINISHED and "Traceback" not in captured.err
    assert "evaluate: short.wav: too short: 150 samples" in captured.err
    summary = json.loads((tmp_path / "s.json").read_text())["summaries"]["bsrnn"]
    assert summary["num_valid"] == 1 and summary["num_failed"] == 1


def test_case7_cmgan_gets_its_own_default_chunk_and_a_too_long_one_is_refused(tmp_path, capsys, cmgan_ckpt):
    default = chunking.default_chunk_seconds("cmgan")
    assert chunking.default_chunk_seconds("bsrnn") == 30 and 1 <= default < 5
    assert chunking.memory_model("cmgan").chunk_bytes(default) <= chunking.DEFAULT_CHUNK_BUDGET
    noisy, out = tmp_path / "in", tmp_path / "out"
    write(noisy, "long.wav", noisy_speech(0.6, 1))  # one pass: the default chunk of a smoke CMGAN still takes 2 GiB
    code, lines = enhance(capsys, cmgan_ckpt, noisy, out, "--chunk-seconds", 600)
    assert code == EXIT_BAD_INPUT and not out.exists()  # refused before any work
    assert len(lines) == 1 and "--chunk-seconds 600 with --batch-size 1: a cmgan generator needs about" in lines[0]
    safe = float(lines[0].split("use --chunk-seconds ")[1].split()[0])
    available, _ = chunking.available_bytes("cpu")
    model = chunking.memory_model("cmgan")
    assert model.chunk_bytes(safe) <= chunking.USABLE_FRACTION * available < model.chunk_bytes(safe + 0.2)
    code, lines = enhance(capsys, cmgan_ckpt, noisy, out)
    # chunking itself: tests/test_enhance.py
    assert code == EXIT_FINISHED and lines == [] and outputs(out) == ["long.wav"]
    assert json.loads((out / "enhance.json").read_text())["chunk_seconds"] == default
    assert np.isfinite(sf.read(out / "long.wav")[0]).all()


@pytest.mark.parametrize("value", ["inf", "nan"])
def test_case12_a_non_finite_chunk_is_refused_before_enhance_json(tmp_path, capsys, bsrnn_ckpt, value):
    noisy, out = tmp_path / "in", tmp_path / "out"
    write(noisy, "a.wav", noisy_speech(0.5, 1))
    code, lines = enhance(capsys, bsrnn_ckpt, noisy, out, "--chunk-seconds", value)
    assert code == EXIT_BAD_INPUT and lines == [f"enhance: error: --chunk-seconds {value} is not a finite number "
                                                "of seconds"] and not out.exists()


def test_case18_temporaries_of_a_killed_run_are_deleted_by_the_next(tmp_path, capsys, bsrnn_ckpt):
    noisy, out = tmp_path / "in", tmp_path / "out"
    write(noisy, "spk/a.wav", noisy_speech(0.5, 1))
    write(noisy, "b.wav", noisy_speech(0.5, 2))
    assert enhance(capsys, bsrnn_ckpt, noisy, out)[0] == EXIT_FINISHED
    (out / "b.wav").unlink()
    left = [out / ".b.wav.k3j9x2.tmp", out / "spk/.a.wav.0a1b2c.tmp", out / ".enhance.json.zz81qq.tmp"]
    for path in left:  # what a writer killed between mkstemp and rename leaves
        path.write_bytes(b"RIFF half a wav")
    assert enhance(capsys, bsrnn_ckpt, noisy, out)[0] == EXIT_FINISHED
    assert not list(out.rglob("*.tmp")) and outputs(out) == ["b.wav", "spk/a.wav"]


def fill(folder, leave_bytes: int):
    """Fill the file system of ``folder`` until ENOSPC (unbuffered: nothing left to flush), then free
    ``leave_bytes``."""
    filler = folder / "filler.bin"
    with open(filler, "wb", buffering=0) as fh:
        try:
            while fh.write(b"\0" * 2**16):
                pass
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    os.truncate(filler, max(0, filler.stat().st_size - leave_bytes))
    return filler


@pytest.fixture
def mount(tmp_path):
    """mount(options) -> a fresh tmpfs with those options (needs root; skipped otherwise)."""
    mounted = []

    def make(options: str):
        point = tmp_path / f"mnt{len(mounted)}"
        point.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], capture_output=True,
                              text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs (needs root): {proc.stderr.strip() or proc.returncode}")
        mounted.append(point)
        return point

    yield make
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], check=False)


def test_case9_read_only_out_dir_is_one_line_before_any_work(tmp_path, capsys, bsrnn_ckpt, mount):
    noisy = tmp_path / "in"
    write(noisy, "a.wav", noisy_speech(0.5, 1))
    write(tmp_path / "clean", "a.wav", noisy_speech(0.5, 2))
    read_only = mount("ro,size=1m")
    code, lines = enhance(capsys, bsrnn_ckpt, noisy, read_only / "out")
    assert code == EXIT_BAD_INPUT and len(lines) == 1
    assert f"--out-dir {read_only / 'out'}: cannot write there (Read-only file system)" in lines[0]
    code = evaluate_cmd.main(["--checkpoint", str(bsrnn_ckpt), "--clean-dir", str(tmp_path / "clean"),
                              "--noisy-dir", str(noisy), "--out-dir", str(read_only), "--workers", "1",
                              "--no-progress", "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == EXIT_BAD_INPUT and captured.out == "" and "Traceback" not in captured.err  # before scoring
    assert captured.err.strip() == f"evaluate: --out-dir {read_only}: cannot write there (Read-only file system); " \
                                   "choose a writable folder"


def test_case9_full_disk_is_exit_4_and_keeps_what_was_written(tmp_path, capsys, bsrnn_ckpt, mount):
    noisy, disk = tmp_path / "in", mount("size=4m")
    out = disk / "out"
    for k in range(6):
        write(noisy, f"f{k}.wav", noisy_speech(2.0, k))  # 128 kB each as float32
    assert enhance(capsys, bsrnn_ckpt, noisy, out, "--chunk-seconds", 3)[0] == EXIT_FINISHED
    kept = {name: sf.read(out / name)[0] for name in outputs(out)}  # samples: a float WAV's PEAK chunk has a time
    for name in ("f3.wav", "f4.wav", "f5.wav"):
        (out / name).unlink()
    filler = fill(disk, 200 * 1024)  # room for one more file, not three
    code, lines = enhance(capsys, bsrnn_ckpt, noisy, out, "--chunk-seconds", 3)
    assert code == EXIT_DISK_FULL and len(lines) == 1, lines
    assert "no space left on the device while writing" in lines[0] and str(out / "f4.wav") in lines[0]
    assert not list(out.rglob("*.tmp")) and outputs(out) == ["f0.wav", "f1.wav", "f2.wav", "f3.wav"]
    for name in outputs(out):  # nothing already written is lost or changed
        np.testing.assert_array_equal(sf.read(out / name)[0], kept[name])
    filler.unlink()
    assert enhance(capsys, bsrnn_ckpt, noisy, out, "--chunk-seconds", 3)[0] == EXIT_FINISHED
    for name, samples in kept.items():
        np.testing.assert_array_equal(sf.read(out / name)[0], samples)
