"""Kept checkpoints placed on the validation curves (trainer.report.kept, trainer.plot, the report's table),
from metrics.jsonl written by the trainer's own MetricsLog and sidecars written by trainer.core.ckptinfo."""

import os

import matplotlib.pyplot as plt

from trainer.core import ckptinfo
from trainer.core.runstate import MetricsLog, read_metrics
from trainer.plot import validation_figure
from trainer.report.html import kept_table
from trainer.report.kept import kept_points

CURVE = [  # (epoch, step, loss, pesq, stoi, ssnr, checkpoints saved at this validation)
    (0, 10, 0.9, 1.8, 0.80, 4.0, ["last", "best_loss", "best_pesq"]),
    (1, 20, 0.8, 2.1, 0.82, 5.0, ["last", "best_loss", "best_pesq"]),
    (2, 30, 0.7, 2.0, 0.81, 4.5, ["last", "best_loss"]),
]


def _run(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    log = MetricsLog(run_dir)
    for epoch, step, loss, pesq, stoi, ssnr, saved in CURVE:
        log.write({"kind": "step", "step": step, "epoch": epoch, "loss": 1.0})
        log.write({"kind": "epoch", "epoch": epoch, "step": step, "valid_loss": loss, "valid_pesq": pesq,
                   "valid_stoi": stoi, "valid_ssnr": ssnr, "checkpoints": saved})
    log.close()

    def save(name, step, epoch):
        path = run_dir / "checkpoints" / f"{name}.pt"
        path.write_bytes(os.urandom(64))
        ckptinfo.write([path], {"step": step, "epoch": epoch, "best": {}, "code": None, "config_sha256": "x"})
        return path

    save("best_pesq", 20, 2)
    save("last", 30, 3)
    stale = save("best_loss", 30, 3)
    stale.write_bytes(os.urandom(80))  # rewritten after its sidecar: the sidecar no longer describes it
    save("best_stoi", 25, 2)  # saved mid-epoch (a stop between validations): no point on the curves
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
