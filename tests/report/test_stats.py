"""Intervals, paired differences, breakdowns, PESQ bands and divergence alerts on known numbers."""

import numpy as np
import pytest

from trainer.report import stats
from trainer.report.alerts import divergence_alerts, diverging_streaks, ssnr_collapse
from trainer.report.summary import statistics


def _rows(values, key="pesq", **extra):
    return [{"name": f"f{i}.wav", key: v, "error": None} | extra for i, v in enumerate(values)]


def test_bootstrap_interval_is_seeded_and_covers_the_mean():
    values = np.random.default_rng(1).normal(3.0, 0.5, size=200)
    low, high = stats.bootstrap_interval(values, seed=7)
    assert stats.bootstrap_interval(values, seed=7) == [low, high]
    assert stats.bootstrap_interval(values, seed=8) != [low, high]
    assert low < values.mean() < high
    # the interval of a mean of 200 draws with sd 0.5: about +-1.96 * 0.5 / sqrt(200) = +-0.069
    assert high - low == pytest.approx(2 * 1.96 * values.std() / np.sqrt(200), rel=0.15)
    assert stats.bootstrap_interval([1.0]) is None


def test_paired_difference_uses_files_valid_in_both():
    noisy = _rows([1.0, 2.0, 3.0, 4.0]) + [{"name": "bad.wav", "pesq": None, "error": "silent reference"}]
    enhanced = _rows([1.5, 2.5, 3.4, 4.6]) + [{"name": "bad.wav", "pesq": 4.5, "error": None}]
    diff = stats.paired_difference(enhanced, noisy, ["pesq"])["pesq"]
    assert diff["n"] == 4 and diff["mean"] == pytest.approx(0.5)
    assert 0.4 <= diff["ci95"][0] <= diff["mean"] <= diff["ci95"][1] <= 0.6


def test_conditions_csv_and_snr_bands(tmp_path):
    path = tmp_path / "conditions.csv"
    path.write_text("name,noise,snr_db\nf0.wav,babble,-2.5\nf1.wav,babble,0\nf2.wav,cafe,7.5\nf3.wav,cafe,12\n")
    table = stats.read_conditions(path)
    assert table["f0.wav"] == {"noise": "babble", "snr_db": "-5-0 dB"} and table["f3.wav"]["snr_db"] == "10-15 dB"
    out = stats.breakdown(_rows([1.0, 2.0, 3.0, 4.0]), table, ["pesq"])
    assert out["noise"]["babble"]["pesq"]["mean"] == pytest.approx(1.5)
    assert list(out["snr_db"]) == ["-5-0 dB", "0-5 dB", "5-10 dB", "10-15 dB"]
    (tmp_path / "bad.csv").write_text("file,noise\nf0.wav,babble\n")
    with pytest.raises(ValueError, match="needs a 'name' column"):
        stats.read_conditions(tmp_path / "bad.csv")
    (tmp_path / "nan.csv").write_text("name,snr_db\nf0.wav,loud\n")
    with pytest.raises(ValueError, match="line 2: snr_db 'loud' is not a number"):
        stats.read_conditions(tmp_path / "nan.csv")


def test_narrow_and_wide_band_pesq_are_never_pooled():
    rows = _rows([1.5, 1.7], sample_rate=8000) + [{"name": "w.wav", "pesq": 3.0, "error": None, "sample_rate": 16000}]
    summary = {"pesq": 2.07}
    note = stats.separate_pesq_bands(rows, summary)
    assert summary["pesq"] is None and summary["pesq_nb"] == pytest.approx(1.6) and summary["pesq_wb"] == 3.0
    assert "not averaged together" in note
    intervals = statistics({"x": rows}, None, 0)["intervals"]["x"]
    assert "pesq" not in intervals and intervals["pesq_nb"]["n"] == 2 and intervals["pesq_wb"]["n"] == 1
    assert stats.separate_pesq_bands(_rows([2.0], sample_rate=16000), {}) is None


def _epochs(losses, pesq, ssnr=None):
    return [{"kind": "epoch", "epoch": e, "valid_loss": loss, "valid_pesq": p,
             "valid_ssnr": None if ssnr is None else ssnr[e]}
            for e, (loss, p) in enumerate(zip(losses, pesq, strict=True))]


def test_divergence_alerts_name_the_epochs():
    losses = [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.55]
    pesq = [2.0, 2.2, 2.1, 2.0, 1.9, 1.8, 1.9]  # declines at epochs 2-5 while the loss improves
    ssnr = [5.0, 8.0, 10.0, 9.0, 8.5, 7.0, 7.5]  # best 10 at epoch 2, last 7.5: a 25 % fall
    records = _epochs(losses, pesq, ssnr) + [{"kind": "step", "step": 3}]
    assert diverging_streaks(records, "valid_pesq") == [(2, 5)]
    assert diverging_streaks(records, "valid_pesq", streak=5) == []
    assert ssnr_collapse(records) == (2, 10.0, 6, 7.5) and ssnr_collapse(records, fraction=0.3) is None
    alerts = divergence_alerts(records)
    assert len(alerts) == 2 and "PESQ declined" in alerts[0] and "epochs 3-6" in alerts[0]  # counted from 1
    assert "10.00 dB at epoch 3, 7.50 dB at epoch 7" in alerts[1]
    assert divergence_alerts(_epochs([1.0, 0.9, 0.8, 0.7], [2.0, 2.1, 2.2, 2.3])) == []
