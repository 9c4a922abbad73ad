"""Kept checkpoints placed on the validation curves (trainer.report.kept, trainer.plot, the report's table),
from metrics.jsonl written by the trainer's own MetricsLog and sidecars written by trainer.core.ckptinfo."""

import os

import matplotlib.pyplot as plt
from run_dirs import save_checkpoint, write_run

from trainer.core.runstate import read_metrics
from trainer.plot import validation_figure
from trainer.report.html import kept_table
from trainer.report.kept import kept_points


def _run(tmp_path):
    run_dir = write_run(tmp_path / "run", overrides=None)
    stale = run_dir / "checkpoints" / "best_loss.pt"
    stale.write_bytes(os.urandom(80))  # rewritten after its sidecar: the sidecar no longer describes it
    save_checkpoint(run_dir, "best_stoi", 25, 2)  # saved mid-epoch (a stop between validations): no point
    return run_dir


def test_kept_checkpoints_sit_where_they_were_saved(tmp_path):
    run_dir = _run(tmp_path)
    kept = kept_points(run_dir, read_metrics(run_dir))
    assert list(kept) == ["best_loss", "best_pesq", "last"]
    assert kept["best_pesq"] == {"epoch": 1, "step": 20, "source": "sidecar", "valid_loss": 0.8,
                                 "valid_pesq": 2.1, "valid_stoi": 0.82, "valid_ssnr": 5.0}
    assert kept["last"]["epoch"] == 2 and kept["last"]["source"] == "sidecar"
    assert kept["best_loss"]["epoch"] == 2 and kept["best_loss"]["source"] == "metrics.jsonl"


def test_curves_and_the_report_table_mark_them(tmp_path):
    run_dir = _run(tmp_path)
    records = read_metrics(run_dir)
    kept = kept_points(run_dir, records)
    fig = validation_figure([r for r in records if r.get("kind") == "epoch"], kept)
    pesq_axis = fig.axes[0]
    marks = {line.get_gid(): (list(line.get_xdata()), list(line.get_ydata())) for line in pesq_axis.lines
             if (line.get_gid() or "").startswith("kept:")}
    assert marks == {"kept:best_loss": ([3], [2.0]), "kept:best_pesq": ([2], [2.1]), "kept:last": ([3], [2.0])}
    assert sorted(t.get_text() for t in pesq_axis.texts) == ["best_loss, last", "best_pesq"]
    assert list(pesq_axis.lines[0].get_xdata()) == [1, 2, 3]  # epochs counted from 1, as the table says
    plt.close(fig)
    page = kept_table(kept)
    assert '<tr class="kept" data-name="best_pesq"><td class="l">best_pesq</td><td data-key="epoch">2</td>' in page
    assert '<td data-key="valid_pesq">2.100</td>' in page
