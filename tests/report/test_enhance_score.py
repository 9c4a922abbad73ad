"""trainer.enhance --score: what it wrote is scored without references (DNSMOS), in OUT/scores.csv/json."""

import csv
import json

import numpy as np
import pytest
import soundfile as sf

from tests.test_enhance import noisy_speech, run_enhance, save_checkpoint
from trainer.metrics import dnsmos

SR = 16000


@pytest.mark.skipif(bool(dnsmos.missing_packages()), reason=dnsmos.MISSING)
@pytest.mark.slow  # DNSMOS on the CPU
def test_enhance_score_scores_what_it_wrote(tmp_path, repo_root, one_torch_thread):
    noisy_dir, out_dir = tmp_path / "noisy", tmp_path / "out"
    noisy_dir.mkdir()
    sf.write(noisy_dir / "a.wav", noisy_speech(2.0, 0), SR, subtype="PCM_16")
    sf.write(noisy_dir / "b.wav", noisy_speech(3.0, 1), SR, subtype="PCM_16")
    save_checkpoint(tmp_path / "g.pt", seed=4)
    proc = run_enhance(repo_root, "--checkpoint", tmp_path / "g.pt", "--noisy-dir", noisy_dir, "--out-dir", out_dir,
                       "--device", "cpu", "--score")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "DNSMOS_OVRL" in proc.stdout
    with open(out_dir / "scores.csv", newline="") as fh:
        rows = {row["name"]: row for row in csv.DictReader(fh)}
    assert set(rows) == {"a.wav", "b.wav"}
    wave, _ = sf.read(out_dir / "a.wav")
    expected = dnsmos.dnsmos(np.clip(wave, -1, 1).astype(np.float32))
    assert float(rows["a.wav"]["dnsmos_ovrl"]) == pytest.approx(expected["dnsmos_ovrl"], abs=1e-6)
    assert json.loads((out_dir / "scores.json").read_text())["summary"]["num_valid"] == 2
