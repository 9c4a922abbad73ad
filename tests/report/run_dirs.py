"""Run directories for the report tests, written by the project's own writers: metrics.jsonl by the
trainer's MetricsLog, checkpoint sidecars by trainer.core.ckptinfo, config.yaml by save_config."""

import os

from trainer.core import ckptinfo
from trainer.core.runstate import MetricsLog

# (epoch, step, loss, pesq, stoi, ssnr, checkpoints saved at this validation)
CURVE = [(0, 10, 0.9, 1.8, 0.80, 4.0, ["last", "best_loss", "best_pesq"]),
         (1, 20, 0.8, 2.1, 0.82, 5.0, ["last", "best_loss", "best_pesq"]),
         (2, 30, 0.7, 2.0, 0.81, 4.5, ["last", "best_loss"])]
# validation loss improves while PESQ falls at epochs 3-6 (counted from 1) and SSNR loses 30 % of its best
DIVERGING = [(e, 10 * (e + 1), 1.0 - 0.1 * e, pesq, 0.8, ssnr, ["last", "best_loss"] + ["best_pesq"] * (e == 1))
             for e, (pesq, ssnr) in enumerate([(2.0, 8.0), (2.3, 10.0), (2.2, 9.0), (2.1, 8.0), (2.0, 7.5),
                                               (1.9, 7.0)])]


def save_checkpoint(run_dir, name, step, epoch):
    """A file in a checkpoint's place (only its sidecar is read here) and the sidecar the trainer writes."""
    path = run_dir / "checkpoints" / f"{name}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(64))
    ckptinfo.write([path], {"step": step, "epoch": epoch, "best": {}, "code": None, "config_sha256": "x"})
    return path


def write_run(run_dir, curve=CURVE, overrides=()):
    """metrics.jsonl with ``curve``'s step and epoch records; each checkpoint's sidecar at its last save."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if overrides is not None:
        from trainer.core.config import load_config, save_config

        save_config(load_config("configs/smoke.yaml", list(overrides)), run_dir / "config.yaml")
    log = MetricsLog(run_dir)
    last_save = {}
    for epoch, step, loss, pesq, stoi, ssnr, saved in curve:
        log.write({"kind": "step", "step": step - 1, "epoch": epoch, "loss": 1.0})
        log.write({"kind": "epoch", "epoch": epoch, "step": step, "valid_loss": loss, "valid_pesq": pesq,
                   "valid_stoi": stoi, "valid_ssnr": ssnr, "checkpoints": saved})
        last_save.update({name: (step, epoch + 1) for name in saved})
    log.close()
    for name, (step, epoch) in last_save.items():
        save_checkpoint(run_dir, name, step, epoch)
    return run_dir
