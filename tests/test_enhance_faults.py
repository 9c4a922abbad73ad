"""Fault injection for trainer.enhance and trainer.evaluate (issue 22), the way tests/test_faults.py does
it for the training:

(a) kill -9 trainer.enhance at seeded random moments (after a random number of files is written): after
    every kill each enhanced file present is complete and equal to an uninterrupted run's, and the run
    that finishes the folder leaves no temporary file behind;
(b) flip a byte at seeded random offsets of real WAV and FLAC files (header or samples): enhance and
    evaluate (folder and checkpoint modes) either process each file or list it by name, never a
    traceback.
"""

import csv
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf

from tests.test_enhance import noisy_speech
from tests.test_enhance_trust import enhance, outputs
from trainer import evaluate as evaluate_cmd
from trainer.core.exitcodes import EXIT_BAD_INPUT, EXIT_FINISHED

SR = 16000
NUM_KILLS = 6
NUM_FLIPS = 16
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def enhance_cmd(checkpoint, noisy_dir, out_dir) -> list[str]:
    return [sys.executable, "-m", "trainer.enhance", "--checkpoint", str(checkpoint), "--noisy-dir", str(noisy_dir),
            "--out-dir", str(out_dir), "--device", "cpu", "--no-progress", "--chunk-seconds", "2",
            "--overlap-seconds", "0.25"]


def check_at_rest(out_dir, reference: dict) -> None:
    """Every enhanced file present is whole and equal to the uninterrupted run's."""
    for name in outputs(out_dir):
        np.testing.assert_array_equal(sf.read(out_dir / name, dtype="float32")[0], reference[name])
    assert len(list(out_dir.rglob("*.tmp"))) <= 1  # at most the one being written when killed


@pytest.mark.slow
def test_kill_9_at_random_moments_keeps_only_whole_files(tmp_path, repo_root, capsys, bsrnn_ckpt):
    noisy = tmp_path / "in"
    for k in range(8):
        (noisy / "spk").mkdir(parents=True, exist_ok=True)
        sf.write(noisy / ("spk" if k % 2 else "") / f"f{k}.wav", noisy_speech(0.6 + 0.4 * k, k), SR, subtype="FLOAT")
    code, _ = enhance(capsys, bsrnn_ckpt, noisy, tmp_path / "straight", "--chunk-seconds", 2, "--overlap-seconds", 0.25)
    assert code == EXIT_FINISHED
    reference = {name: sf.read(tmp_path / "straight" / name, dtype="float32")[0]
                 for name in outputs(tmp_path / "straight")}
    out, rng = tmp_path / "out", random.Random(20261207)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for _ in range(NUM_KILLS):
        target = rng.randint(len(outputs(out)) if out.exists() else 0, len(reference))
        proc = subprocess.Popen(enhance_cmd(bsrnn_ckpt, noisy, out), cwd=repo_root, env=env, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        while proc.poll() is None and not (out.exists() and len(outputs(out)) >= target):
            time.sleep(0.01)  # waits for an event: the target number of files written, or the end
        time.sleep(rng.uniform(0.0, 0.05))  # then a random moment of the next file's work
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        stderr = proc.communicate()[1].decode()
        assert "Traceback" not in stderr, stderr
        check_at_rest(out, reference)
    final = subprocess.run(enhance_cmd(bsrnn_ckpt, noisy, out), cwd=repo_root, env=env, capture_output=True, text=True,
                           timeout=600)
    assert final.returncode == EXIT_FINISHED, final.stderr
    check_at_rest(out, reference)
    assert outputs(out) == sorted(reference) and not list(out.rglob("*.tmp"))


def flipped_copies(tmp_path, folder, suffixes=(".wav", ".flac")) -> dict:
    """NUM_FLIPS copies of real audio files, each with one byte changed at a seeded random offset."""
    rng = random.Random(20261208)
    sources = {}
    for k, (suffix, subtype) in enumerate(((".wav", "FLOAT"), (".wav", "PCM_16"), (".flac", "PCM_16"))):
        if suffix in suffixes:
            sources[tmp_path / f"source{k}{suffix}"] = subtype
            sf.write(tmp_path / f"source{k}{suffix}", noisy_speech(0.5, k), SR, subtype=subtype)
    folder.mkdir(parents=True)
    made = {}
    for i in range(NUM_FLIPS):
        source = rng.choice(sorted(sources))
        data = bytearray(source.read_bytes())
        offset = rng.randrange(len(data)) if rng.random() < 0.5 else rng.randrange(min(64, len(data)))  # header too
        data[offset] ^= rng.randrange(1, 256)
        name = f"flip{i:02d}{source.suffix}"
        (folder / name).write_bytes(bytes(data))
        made[name] = source
    return made


@pytest.mark.slow
def test_byte_flips_in_inputs_are_processed_or_listed_by_enhance(tmp_path, capsys, bsrnn_ckpt):
    noisy, out = tmp_path / "in", tmp_path / "out"
    made = flipped_copies(tmp_path, noisy)
    data = bytearray((noisy / "../source0.wav").read_bytes())
    data[24:28] = (16001).to_bytes(4, "little")  # a damaged rate: resampling it would take a 1 GB kernel
    (noisy / "rate16001.wav").write_bytes(bytes(data))
    made["rate16001.wav"] = None
    code, lines = enhance(capsys, bsrnn_ckpt, noisy, out, "--chunk-seconds", 2, "--overlap-seconds", 0.25)
    assert code in (EXIT_FINISHED, EXIT_BAD_INPUT) and (code == EXIT_BAD_INPUT) == bool(lines)
    listed = {line.split(": ", 2)[1] for line in lines}
    for name in made:
        written = (out / name).with_suffix(".wav")
        assert (str(noisy / name) in listed) != written.exists(), (name, lines)  # exactly one of the two
        if written.exists():
            got, rate = sf.read(written)
            want, want_rate = sf.read(noisy / name)
            assert rate == want_rate and len(got) == len(want) and np.isfinite(got).all()
    assert any("rate16001.wav: sample rate 16001 Hz cannot be resampled" in line for line in lines), lines


@pytest.mark.slow
def test_byte_flips_are_scored_or_listed_by_evaluate(tmp_path, capsys, bsrnn_ckpt):
    clean, flipped = tmp_path / "clean", tmp_path / "flipped"
    made = flipped_copies(tmp_path, flipped, suffixes=(".wav",))
    clean.mkdir()
    for name, source in made.items():
        shutil.copy(source, clean / name)
    for mode in (["--enhanced-dir", str(flipped)], ["--checkpoint", str(bsrnn_ckpt), "--noisy-dir", str(flipped),
                                                    "--device", "cpu"]):
        report = tmp_path / "scores.csv"
        code = evaluate_cmd.main(["--clean-dir", str(clean), *mode, "--workers", "1", "--no-progress",
                                  "--csv", str(report)])
        captured = capsys.readouterr()
        assert code in (EXIT_FINISHED, EXIT_BAD_INPUT) and "Traceback" not in captured.err, captured.err
        rows = list(csv.DictReader(report.open()))
        assert sorted(row["name"] for row in rows) == sorted(made)  # every file: scores or its error
        for row in rows:
            assert (row["error"] == "") == (row["pesq"] != ""), row  # scored, or an error and no score
