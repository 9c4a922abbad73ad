"""python -m trainer.evaluate on real wav folders: one bad file is reported, not fatal."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from trainer import evaluate
from trainer.data.synth import babble_like_noise, mix_at_snr, synthesize_speech
from trainer.metrics.quality import METRIC_KEYS, compute_metrics

SR = 16000
SENTENCES = ("The birch canoe slid on the smooth planks.", "Rice is often served in round bowls.")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """clean/ and enhanced/ with two good pairs (one in a subfolder), one corrupt enhanced wav,
    one clean file without an enhanced counterpart and one enhanced file without a clean one."""
    root = tmp_path_factory.mktemp("eval")
    clean_dir, enhanced_dir = root / "clean", root / "enhanced"
    (clean_dir / "spk2").mkdir(parents=True)
    (enhanced_dir / "spk2").mkdir(parents=True)
    pairs = {}
    for i, (name, text) in enumerate(zip(("a.wav", "spk2/b.wav"), SENTENCES, strict=True)):
        clean = synthesize_speech(text, SR, voice=("en-us", "en-gb")[i])
        noisy = mix_at_snr(clean, babble_like_noise(len(clean), SR, seed=i), (25, 35)[i])
        sf.write(clean_dir / name, clean, SR, subtype="PCM_16")
        sf.write(enhanced_dir / name, noisy, SR, subtype="PCM_16")
        pairs[name] = (sf.read(clean_dir / name)[0], sf.read(enhanced_dir / name)[0])
    sf.write(clean_dir / "broken.wav", synthesize_speech("Four hours of steady work faced us.", SR), SR)
    (enhanced_dir / "broken.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEnot really a wav file")
    sf.write(clean_dir / "lonely.wav", synthesize_speech("A rod is used to catch pink salmon.", SR), SR)
    sf.write(enhanced_dir / "extra.wav", np.zeros(SR, np.float32), SR)
    return clean_dir, enhanced_dir, pairs


def test_cli_scores_a_folder_with_one_bad_file(folders, tmp_path, repo_root):
    clean_dir, enhanced_dir, pairs = folders
    csv_path, json_path = tmp_path / "out" / "rows.csv", tmp_path / "out" / "summary.json"
    proc = subprocess.run([sys.executable, "-m", "trainer.evaluate", "--clean-dir", str(clean_dir),
                           "--enhanced-dir", str(enhanced_dir), "--workers", "2", "--csv", str(csv_path),
                           "--json", str(json_path)], capture_output=True, text=True, cwd=repo_root, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "scored 2 of 4 files (2 failed)" in proc.stdout
    assert "broken.wav: unreadable wav" in proc.stdout and "lonely.wav: missing enhanced file" in proc.stdout
    assert "extra.wav" in proc.stdout  # the unmatched enhanced file is mentioned
    assert "PESQ" in proc.stdout and "COVL" in proc.stdout

    with open(csv_path, newline="") as fh:
        rows = {row["name"]: row for row in csv.DictReader(fh)}
    assert set(rows) == {"a.wav", "broken.wav", "lonely.wav", "spk2/b.wav"}
    for name, (clean, enhanced) in pairs.items():
        expected = compute_metrics(clean, enhanced, SR)
        for key in METRIC_KEYS:
            assert float(rows[name][key]) == pytest.approx(expected[key], abs=1e-9), (name, key)
        assert rows[name]["error"] == ""
    assert rows["broken.wav"]["pesq"] == "" and rows["broken.wav"]["error"].startswith("unreadable wav")

    report = json.loads(json_path.read_text())
    summary = report["summary"]
    assert summary["num_valid"] == 2 and summary["num_failed"] == 2
    assert summary["failures"] == {"missing enhanced file": 1, "unreadable wav (LibsndfileError)": 1}
    assert summary["pesq"] == pytest.approx(np.mean([float(rows[n]["pesq"]) for n in pairs]), abs=1e-9)
    assert report["unmatched_enhanced"] == ["extra.wav"]
    assert report["versions"]["pesq"] == "0.0.4" and report["versions"]["numpy"] == np.__version__
    assert report["git_revision"] is None or len(report["git_revision"]) >= 40


def test_score_pairs_in_memory_is_the_same_with_a_pool(folders):
    _, _, pairs = folders
    items = [(name, clean, enhanced) for name, (clean, enhanced) in pairs.items()]
    items.append(("silent", pairs["a.wav"][0], np.zeros_like(pairs["a.wav"][1])))
    rows_one, summary_one = evaluate.score_pairs(items, SR, workers=1)
    rows_two, summary_two = evaluate.score_pairs(items, SR, workers=2)
    # ESTOI's last bits depend on the BLAS thread count of the process (pool workers use one thread)
    for one, two in [*zip(rows_one, rows_two, strict=True), (summary_one, summary_two)]:
        assert one.keys() == two.keys()
        for key, value in one.items():
            assert two[key] == (pytest.approx(value, rel=1e-12) if isinstance(value, float) else value), key
    assert [r["name"] for r in rows_one] == ["a.wav", "spk2/b.wav", "silent"]
    assert summary_one["failures"] == {"silent enhanced signal": 1}
    table = evaluate.format_table({"best_pesq": summary_one, "last": summary_two}, rows_one)
    assert "best_pesq" in table and "last" in table and "silent: silent enhanced signal" in table


def test_checkpoint_mode_errors_are_clear(tmp_path, capsys):
    assert evaluate.main(["--checkpoint", str(tmp_path / "x.pt"), "--noisy-dir", "n"]) == 2
    assert "x.pt: no such file" in capsys.readouterr().err
    assert evaluate.main(["--run-dir", str(tmp_path)]) == 2
    assert "no checkpoints under" in capsys.readouterr().err
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    assert evaluate.main(["--checkpoint", str(tmp_path / "bad.pt"), "--clean-dir", str(tmp_path),
                          "--noisy-dir", str(tmp_path)]) == 2
    assert "bad.pt: not a readable checkpoint" in capsys.readouterr().err


@pytest.mark.slow
def test_run_dir_mode_scores_every_kept_checkpoint(tmp_path, repo_root, folders):
    """A real (tiny) training run, then every kept checkpoint enhanced and scored side by side."""
    clean_dir, noisy_dir, _ = folders
    run_dir = tmp_path / "run"
    sets = ["train.epochs=1", "train.max_steps_per_epoch=2", "valid.max_utterances=2", "train.pesq_workers=0"]
    proc = subprocess.run([sys.executable, "-m", "trainer.train", "--config", "configs/smoke.yaml", "--run-dir",
                           str(run_dir), *[a for s in sets for a in ("--set", s)]], cwd=repo_root,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = subprocess.run([sys.executable, "-m", "trainer.evaluate", "--run-dir", str(run_dir), "--clean-dir",
                          str(clean_dir), "--noisy-dir", str(noisy_dir), "--out-dir", str(tmp_path / "enh"),
                          "--json", str(tmp_path / "s.json"), "--workers", "1", "--no-progress",
                          "--report", str(tmp_path / "report")],
                         cwd=repo_root, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    header = [line for line in out.stdout.splitlines() if line.startswith("metric")][0].split()
    assert header == ["metric", "noisy", "best_loss", "best_pesq", "best_stoi", "best_composite", "last"]
    report = json.loads((tmp_path / "s.json").read_text())
    assert report["checkpoints"]["last"]["step"] == 2 and report["checkpoints"]["last"]["run"] == "smoke"
    noisy_pesq = report["summaries"]["noisy"]["pesq"]
    expected = np.mean([compute_metrics(c, n, SR, which=("pesq",))["pesq"]
                        for c, n in (_read_pair(clean_dir, noisy_dir, name) for name in ("a.wav", "spk2/b.wav"))])
    assert noisy_pesq == pytest.approx(expected)
    # the report: paired differences against noisy, the run's curves, every checkpoint's audio
    assert set(report["statistics"]["paired_vs_noisy"]) == {"best_loss", "best_pesq", "best_stoi",
                                                             "best_composite", "last"}
    page = (tmp_path / "report/index.html").read_text()
    assert 'src="curves/validation.png"' in page and (tmp_path / "report/curves/validation.png").is_file()
    assert page.count("<audio") == 2 * 7 and "http" not in page  # 2 files x (noisy, clean, 5 checkpoints)
    kept = json.loads((tmp_path / "report/report.json").read_text())["kept_checkpoints"]  # circled on the curves
    assert set(kept) == {"best_loss", "best_pesq", "best_stoi", "best_composite", "last"}
    assert all(point["epoch"] == 0 and point["step"] == 2 and point["source"] == "sidecar" for point in kept.values())
    assert '<tr class="kept" data-name="best_pesq">' in page
    written = sorted(p.relative_to(tmp_path / "enh").as_posix() for p in (tmp_path / "enh").rglob("*.wav"))
    assert "last/a.wav" in written and "best_pesq/spk2/b.wav" in written
    enhanced, sr = sf.read(tmp_path / "enh/last/a.wav")
    assert sr == SR and len(enhanced) == len(sf.read(noisy_dir / "a.wav")[0])


def _read_pair(clean_dir, noisy_dir, name):
    return sf.read(clean_dir / name)[0], sf.read(noisy_dir / name)[0]


def test_bad_folders_are_clear_errors(tmp_path, capsys):
    assert evaluate.main(["--clean-dir", str(tmp_path / "nope"), "--enhanced-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--clean-dir" in err and "nope is not a folder" in err
    assert evaluate.main(["--clean-dir", str(tmp_path), "--enhanced-dir", str(tmp_path)]) == 2
    assert "no .wav files" in capsys.readouterr().err


def test_cut_short_enhanced_file_is_a_failure_not_a_perfect_score(tmp_path, capsys):
    """Issue item 4: an enhanced file holding only the first 0.5 s of its reference."""
    clean_dir, enhanced_dir = tmp_path / "clean", tmp_path / "enhanced"
    clean_dir.mkdir()
    enhanced_dir.mkdir()
    clean = synthesize_speech(SENTENCES[0], SR)
    noisy = mix_at_snr(clean, babble_like_noise(len(clean), SR, seed=3), 10)
    sf.write(clean_dir / "cut.wav", clean, SR)
    sf.write(enhanced_dir / "cut.wav", clean[: SR // 2], SR)
    sf.write(clean_dir / "ok.wav", clean, SR)
    sf.write(enhanced_dir / "ok.wav", noisy, SR)
    csv_path = tmp_path / "rows.csv"
    assert evaluate.main(["--clean-dir", str(clean_dir), "--enhanced-dir", str(enhanced_dir), "--workers", "1",
                          "--csv", str(csv_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "scored 1 of 2 files (1 failed)" in out and "cut.wav: length mismatch" in out
    with open(csv_path, newline="") as fh:
        rows = {row["name"]: row for row in csv.DictReader(fh)}
    assert rows["cut.wav"]["pesq"] == "" and rows["cut.wav"]["error"].startswith("length mismatch")
    assert float(rows["ok.wav"]["pesq"]) < 4.0


def test_output_paths_are_checked_before_scoring(folders, tmp_path, capsys):
    """Issue item 9: --csv/--json naming a folder used to fail only after everything was scored."""
    clean_dir, enhanced_dir, _ = folders
    (tmp_path / "a_folder").mkdir()
    for flag in ("--csv", "--json"):
        assert evaluate.main(["--clean-dir", str(clean_dir), "--enhanced-dir", str(enhanced_dir), "--workers", "1",
                              flag, str(tmp_path / "a_folder"), "--no-progress"]) == 2
        captured = capsys.readouterr()
        assert f"{flag} {tmp_path / 'a_folder'} is a folder" in captured.err and "scored" not in captured.out
    (tmp_path / "a_file").write_text("x")
    assert evaluate.main(["--clean-dir", str(clean_dir), "--enhanced-dir", str(enhanced_dir), "--workers", "1",
                          "--csv", str(tmp_path / "a_file" / "rows.csv"), "--no-progress"]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_empty_checkpoint_is_one_line(tmp_path, capsys):
    """Issue item 9: a 0-byte last.pt raised IndexError (an empty exception message)."""
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"")
    assert evaluate.main(["--run-dir", str(tmp_path), "--clean-dir", str(tmp_path), "--noisy-dir",
                          str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "last.pt: " in err and "empty" in err and len(err.strip().splitlines()) == 1
