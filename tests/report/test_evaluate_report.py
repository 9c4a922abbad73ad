"""trainer.evaluate without references (--dnsmos), bad input, and the --report page in a real headless Chromium."""

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from browser import headless_chromium, needs_chromium, open_page, resolve
from run_dirs import DIVERGING, write_run

from trainer.data.synth import babble_like_noise, mix_at_snr, resample, synthesize_speech
from trainer.metrics import dnsmos
from trainer.metrics.quality import resample_to_16k

SR = 16000
SENTENCES = ("The birch canoe slid on the smooth planks.", "Rice is often served in round bowls.",
             "Glue the sheet to the dark blue background.")
needs_dnsmos = pytest.mark.skipif(bool(dnsmos.missing_packages()), reason=dnsmos.MISSING)


def _evaluate(repo_root, *args, env=None):
    return subprocess.run([sys.executable, "-m", "trainer.evaluate", "--no-progress", "--workers", "2",
                           *map(str, args)],
                          capture_output=True, text=True, cwd=repo_root, timeout=900, env=env)


@pytest.fixture(scope="module")
def speech_folders(tmp_path_factory):
    """clean/ and enhanced/: three 16 kHz espeak-ng pairs and one 8 kHz pair (mixed rates), plus a
    silent pair and a pair with a NaN sample; a conditions CSV for them."""
    root = tmp_path_factory.mktemp("report")
    clean_dir, enhanced_dir = root / "clean", root / "enhanced"
    clean_dir.mkdir()
    enhanced_dir.mkdir()
    for i, text in enumerate(SENTENCES):
        clean = synthesize_speech(text, SR, voice=("en-us", "en-gb")[i % 2]).astype(np.float64)
        sf.write(clean_dir / f"f{i}.wav", clean, SR, subtype="PCM_16")
        noisy = mix_at_snr(clean, babble_like_noise(len(clean), SR, seed=i), 5 + 5 * i)
        sf.write(enhanced_dir / f"f{i}.wav", noisy / max(1.0, np.abs(noisy).max()), SR, subtype="PCM_16")
    narrow = resample(synthesize_speech(SENTENCES[0], SR), SR, 8000).astype(np.float64)
    sf.write(clean_dir / "nb.wav", narrow, 8000, subtype="PCM_16")
    sf.write(enhanced_dir / "nb.wav", mix_at_snr(narrow, babble_like_noise(len(narrow), 8000, seed=9), 10), 8000,
             subtype="PCM_16")
    for folder in (clean_dir, enhanced_dir):
        sf.write(folder / "silent.wav", np.zeros(SR), SR, subtype="PCM_16")
        with_nan = np.full(SR, 0.1)
        with_nan[100] = np.nan
        sf.write(folder / "nan.wav", with_nan, SR, subtype="FLOAT")
    (root / "conditions.csv").write_text("name,noise,snr_db\nf0.wav,babble,5\nf1.wav,babble,10\n"
                                         "f2.wav,cafe,15\nnb.wav,cafe,10\n")
    return root


@needs_dnsmos
@pytest.mark.slow  # DNSMOS of four files on the CPU
def test_reference_free_folder_with_mixed_rates_and_bad_files(speech_folders, tmp_path, repo_root):
    enhanced_dir = speech_folders / "enhanced"
    proc = _evaluate(repo_root, "--enhanced-dir", enhanced_dir, "--dnsmos", "--csv", tmp_path / "rows.csv",
                     "--json", tmp_path / "summary.json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "scored 4 of 6 files (2 failed)" in proc.stdout
    assert "DNSMOS: 1 file(s) at 8000 Hz resampled to 16000 Hz" in proc.stdout
    assert "nan.wav: non-finite samples" in proc.stdout and "silent.wav: silent signal" in proc.stdout
    with open(tmp_path / "rows.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        rows = {row["name"]: row for row in reader}
        assert reader.fieldnames[0] == "name" and "pesq" not in reader.fieldnames
    for name in ("f1.wav", "nb.wav"):
        wave, sr = sf.read(enhanced_dir / name)
        expected = dnsmos.dnsmos((wave if sr == SR else resample_to_16k(wave, sr)).astype(np.float32))
        for key, value in expected.items():
            assert float(rows[name][key]) == pytest.approx(value, abs=1e-6), (name, key)
    summary = json.loads((tmp_path / "summary.json").read_text())
    ovrl = summary["statistics"]["intervals"]["enhanced"]["dnsmos_ovrl"]
    assert ovrl["n"] == 4 and ovrl["ci95"][0] <= ovrl["mean"] <= ovrl["ci95"][1]
    assert summary["summary"]["dnsmos_ovrl"] == pytest.approx(ovrl["mean"])

    only_bad = tmp_path / "only_bad"
    only_bad.mkdir()
    for name in ("silent.wav", "nan.wav"):
        shutil.copy(enhanced_dir / name, only_bad / name)
    proc = _evaluate(repo_root, "--enhanced-dir", only_bad, "--dnsmos")
    assert proc.returncode == 2 and "every file failed (2)" in proc.stderr


def test_mixed_rates_never_pool_pesq_and_all_failed_is_an_error(speech_folders, tmp_path, repo_root):
    proc = _evaluate(repo_root, "--clean-dir", speech_folders / "clean", "--enhanced-dir",
                     speech_folders / "enhanced", "--json", tmp_path / "s.json", "--conditions",
                     speech_folders / "conditions.csv")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "PESQ: 1 narrow-band (8 kHz) and 3 wide-band files are not averaged together" in proc.stdout
    report = json.loads((tmp_path / "s.json").read_text())
    assert report["summary"]["pesq"] is None and report["summary"]["pesq_nb"] is not None
    intervals = report["statistics"]["intervals"]["enhanced"]
    assert "pesq" not in intervals and intervals["pesq_wb"]["n"] == 3 and intervals["si_sdr"]["n"] == 4
    assert list(report["statistics"]["breakdown"]["enhanced"]["snr_db"]) == ["5-10 dB", "10-15 dB", "15-20 dB"]
    bad = tmp_path / "bad"
    for side in ("clean", "enhanced"):
        (bad / side).mkdir(parents=True)
        shutil.copy(speech_folders / side / "silent.wav", bad / side / "silent.wav")
    proc = _evaluate(repo_root, "--clean-dir", bad / "clean", "--enhanced-dir", bad / "enhanced")
    assert proc.returncode == 2 and "every file failed (1)" in proc.stderr


def test_bad_report_folder_and_missing_extra_are_refused_before_scoring(speech_folders, tmp_path, repo_root):
    (tmp_path / "a_file").write_text("x")
    proc = _evaluate(repo_root, "--clean-dir", speech_folders / "clean", "--enhanced-dir",
                     speech_folders / "enhanced", "--report", tmp_path / "a_file" / "report",
                     "--csv", tmp_path / "rows.csv")
    assert proc.returncode == 2 and "a_file is a file, not a folder" in proc.stderr
    assert not (tmp_path / "rows.csv").exists() and "scored" not in proc.stdout
    (tmp_path / "onnxruntime.py").write_text("raise ImportError('no onnxruntime here')\n")
    # TESTS_WARM_START=0: cold, since a warm server for this one start would cost its imports (tests/warmstart.py)
    env = {"PYTHONPATH": f"{tmp_path}:{repo_root}", "PATH": "/usr/bin:/bin", "TESTS_WARM_START": "0"}
    proc = _evaluate(repo_root, "--enhanced-dir", speech_folders / "enhanced", "--dnsmos", env=env)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "pip install 'speechmos==0.0.1.1' onnxruntime" in proc.stderr and "missing: onnxruntime" in proc.stderr


@pytest.fixture(scope="module")
def folder_report(speech_folders, tmp_path_factory):
    """One ``--report`` of the speech folders (with conditions), shared by the browser tests."""
    report_dir = tmp_path_factory.mktemp("folder_report") / "report"
    proc = _evaluate(Path(__file__).parents[2], "--clean-dir", speech_folders / "clean", "--enhanced-dir",
                     speech_folders / "enhanced", "--conditions", speech_folders / "conditions.csv",
                     "--report", report_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return report_dir


@needs_chromium
def test_report_opens_in_headless_chromium(folder_report, tmp_path):
    report_dir = folder_report
    page = (report_dir / "index.html").read_text()
    assert "http://" not in page and "https://" not in page  # self-contained: relative links only
    with headless_chromium() as driver:
        seen = open_page(driver, report_dir / "index.html")
        driver.save_screenshot(str(tmp_path / "report.png"))
    states, images, shown = seen["audio"], seen["images"], seen["shown"]
    assert seen["errors"] == []
    assert len(states) >= 2 * 3 and all(ready >= 1 and error is None and duration > 0.5
                                        for _, ready, error, duration in states), states
    assert images and all(width > 0 for _, width in images), images
    statistics = json.loads((report_dir / "report.json").read_text())["statistics"]
    assert len(shown) > 20
    for column, key, field, text in shown:
        assert text == f"{resolve(statistics, field)[column][key]['mean']:.3f}", (column, key, field)
    assert (tmp_path / "report.png").stat().st_size > 10_000


def _compare(repo_root, *args):
    env = {**os.environ, "PATH": "/nonexistent", "SEGAN_JOB_INDEX": os.devnull}  # no Slurm, no job index
    return subprocess.run([sys.executable, "launch.py", "compare", *map(str, args)], cwd=repo_root,
                          capture_output=True, text=True, env=env, timeout=300)


@needs_chromium
def test_compare_report_opens_in_headless_chromium(folder_report, tmp_path, repo_root):
    """launch.py compare --report across two runs: one diverging, with its own listening report (copied
    with its audio), one without any evaluation; checked in a real browser against report.json."""
    diverging = write_run(tmp_path / "runs" / "lr=0.002", DIVERGING, overrides=["optim.lr=0.002"])
    shutil.copytree(folder_report, diverging / "report")  # as trainer.evaluate --run-dir RUN --report RUN/report
    plain = write_run(tmp_path / "runs" / "lr=0.001", overrides=["optim.lr=0.001"])
    out = tmp_path / "compare"
    proc = _compare(repo_root, diverging, plain, "--report", out)
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {out / 'index.html'}" in proc.stdout
    page = (out / "index.html").read_text()
    assert "http://" not in page and "https://" not in page
    data = json.loads((out / "report.json").read_text())
    runs = {run["label"]: run for run in data["runs"]}
    assert runs["lr=0.002"]["config"] == {"optim.lr": "0.002"} and runs["lr=0.001"]["evaluation"] is None
    assert runs["lr=0.002"]["kept_checkpoints"]["best_pesq"]["epoch"] == 1
    assert "(epochs 3-6)" in runs["lr=0.002"]["alerts"][0] and runs["lr=0.001"]["alerts"] == []
    with headless_chromium() as driver:
        seen = open_page(driver, out / "index.html")
        copied = open_page(driver, out / "runs" / "00" / "index.html")
    assert seen["errors"] == [] and copied["errors"] == []
    assert len(seen["images"]) == 3 and all(width > 0 for _, width in seen["images"])  # 2 runs' curves + overlay
    assert "runs/00/index.html" in seen["links"] and "PESQ declined" in seen["text"]
    assert len(seen["shown"]) > 20
    for column, key, field, text in seen["shown"]:
        assert text == f"{resolve(data, field)[column][key]['mean']:.3f}", (column, key, field)
    assert copied["audio"] and all(ready >= 1 and error is None for _, ready, error, _ in copied["audio"])
