"""The plain sbatch template (jobs/submit/template.py): the emitted script against the golden files
in tests/golden/ (Slurm times: tests/jobs/test_slurm.py; profiles: tests/jobs/submit/test_profiles.py)."""

import re
import subprocess
import sys
from pathlib import Path

import yaml

from trainer.core.config import load_config

GOLDEN = Path(__file__).resolve().parents[2] / "golden"


def emit_sbatch(repo_root, run_dir, *extra):
    """The emitted script, with this machine's paths and the snapshot's revision made generic."""
    args = [sys.executable, "launch.py", "--emit-sbatch", "--cluster", "levante", "--account", "ab1234",
            "--config", "configs/se_balanced.yaml", "--run-dir", str(run_dir),
            "--nodes", "2", "--constraint", "a100_80", *extra]
    proc = subprocess.run(args, cwd=repo_root, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.startswith(f"code snapshot: {run_dir}/slurm/code  revision "), proc.stderr
    assert (run_dir / "slurm" / "code" / "jobs" / "requeue.py").is_file()  # the batch shell's requeue CLI too
    subprocess.run(["bash", "-n"], input=proc.stdout, text=True, check=True)  # valid shell as rendered
    text = re.sub(r"^export SEGAN_CODE=.*$", "export SEGAN_CODE=<CODE>", proc.stdout, flags=re.M)
    return (text.replace(sys.executable, "<PYTHON>").replace(str(repo_root), "<ROOT>")
            .replace(str(run_dir), "/scratch/ab1234/runs/se_balanced"))


def test_emitted_sbatch_matches_the_golden_file(repo_root, tmp_path):
    text = emit_sbatch(repo_root, tmp_path / "se_balanced", "--set", "optim.lr=1e-4",
                       "--set", "data.train_dir=/data/my corpus/$(whoami);x")
    assert text == (GOLDEN / "levante_2nodes.sbatch").read_text()
    assert "whoami" not in text  # the --set values live in the frozen config, never in the shell script
    frozen = yaml.safe_load((tmp_path / "se_balanced/slurm/submitted_config.yaml").read_text())
    assert frozen["data"]["train_dir"] == "/data/my corpus/$(whoami);x" and frozen["optim"]["lr"] == 1e-4


def test_emitted_sbatch_trains_the_frozen_config_not_the_checkout(repo_root, tmp_path):
    """An edit of the config (or of its base: chain) after --emit-sbatch cannot change what a
    (re)queued attempt trains: the script names RUN_DIR/slurm/submitted_config.yaml, resolved."""
    base = tmp_path / "base.yaml"
    base.write_text((repo_root / "configs/smoke.yaml").read_text().replace("base: base.yaml",
                                                                           f"base: {repo_root / 'configs/base.yaml'}"))
    child = tmp_path / "child.yaml"
    child.write_text("base: base.yaml\noptim:\n  lr: 0.001\n")
    run_dir = tmp_path / "run"
    proc = subprocess.run([sys.executable, "launch.py", "--emit-sbatch", "--cluster", "levante", "--account", "ab1234",
                           "--config", str(child), "--run-dir", str(run_dir), "--set", "run.seed=3"],
                          cwd=repo_root, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    frozen = run_dir / "slurm" / "submitted_config.yaml"
    assert f"--config {frozen} --run-dir {run_dir} " in proc.stdout
    assert str(child) not in proc.stdout and str(base) not in proc.stdout
    base.write_text(base.read_text().replace("batch_size: 4", "batch_size: 1"))  # edited after printing
    child.write_text("base: base.yaml\noptim:\n  lr: 0.5\n")
    resolved = load_config(frozen)
    assert (resolved.optim.lr, resolved.data.batch_size, resolved.run.seed) == (0.001, 4, 3)


def test_emitted_sbatch_for_the_defaults_matches_the_golden_file(repo_root, tmp_path):
    text = emit_sbatch(repo_root, tmp_path / "se_balanced", "--nodes", "1", "--time", "04:00:00",
                       "--signal-lead", "900")
    assert text == (GOLDEN / "levante_defaults.sbatch").read_text()
