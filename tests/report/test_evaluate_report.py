"""trainer.evaluate without references (--dnsmos), bad input, and the --report page in a real headless Chromium."""

import csv
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

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
    env = {"PYTHONPATH": f"{tmp_path}:{repo_root}", "PATH": "/usr/bin:/bin"}
    proc = _evaluate(repo_root, "--enhanced-dir", speech_folders / "enhanced", "--dnsmos", env=env)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "pip install 'speechmos==0.0.1.1' onnxruntime" in proc.stderr and "missing: onnxruntime" in proc.stderr


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None or shutil.which("chromedriver") is None,
                    reason="needs Debian's chromium and chromium-driver (.ci/run installs them)")
def test_report_opens_in_headless_chromium(speech_folders, tmp_path, repo_root):
    webdriver = pytest.importorskip("selenium.webdriver")
    report_dir = tmp_path / "report"
    proc = _evaluate(repo_root, "--clean-dir", speech_folders / "clean", "--enhanced-dir",
                     speech_folders / "enhanced", "--conditions", speech_folders / "conditions.csv",
                     "--report", report_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    page = (report_dir / "index.html").read_text()
    assert "http://" not in page and "https://" not in page  # self-contained: relative links only
    options = webdriver.ChromeOptions()
    options.binary_location = _chromium()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1300,1600",
                 "--autoplay-policy=no-user-gesture-required"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = webdriver.ChromeService(executable_path=shutil.which("chromedriver"))
    driver = webdriver.Chrome(options=options, service=service)
    try:
        driver.set_script_timeout(120)
        driver.get((report_dir / "index.html").as_uri())
        states = driver.execute_async_script("""
            const done = arguments[arguments.length - 1];
            const audios = Array.from(document.querySelectorAll('audio'));
            const wait = a => new Promise(r => { if (a.readyState >= 1 || a.error) r(); else {
                a.addEventListener('loadedmetadata', r); a.addEventListener('error', r); a.load(); } });
            Promise.all(audios.map(wait)).then(() => done(audios.map(a => [a.getAttribute('src'), a.readyState,
                a.error ? a.error.code : null, a.duration])));""")
        images = driver.execute_script("return Array.from(document.images).map(i => [i.src, i.naturalWidth]);")
        shown = driver.execute_script("""return Array.from(document.querySelectorAll('span.num')).map(s =>
            [s.dataset.column, s.dataset.key, s.dataset.field, s.textContent]);""")
        logs = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        driver.save_screenshot(str(tmp_path / "report.png"))
    finally:
        driver.quit()
    assert logs == []
    assert len(states) >= 2 * 3 and all(ready >= 1 and error is None and duration > 0.5
                                        for _, ready, error, duration in states), states
    assert images and all(width > 0 for _, width in images), images
    statistics = json.loads((report_dir / "report.json").read_text())["statistics"]
    assert len(shown) > 20
    for column, key, field, text in shown:
        table = statistics
        for part in field.split("/"):
            table = table[part]
        assert text == f"{table[column][key]['mean']:.3f}", (column, key, field)
    assert (tmp_path / "report.png").stat().st_size > 10_000
