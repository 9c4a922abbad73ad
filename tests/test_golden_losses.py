"""Per-step losses of the smoke config against a recorded golden file: a refactor must not change them.

Regenerate (and say why in the commit message) with ``UPDATE_GOLDEN=1 pytest tests/test_golden_losses.py``.
The comparison allows a relative 1e-4: another CPU (other SIMD width) may round differently.
"""

import json
import os
import subprocess
import sys

import pytest

from trainer.core.exitcodes import EXIT_FINISHED

COMMON = ["train.epochs=2", "train.max_steps_per_epoch=4", "train.log_every=1", "checkpoint.every_steps=0",
          "valid.max_utterances=2"]
CASES = {
    "smoke": ("configs/smoke.yaml", [*COMMON, "valid.stoi_every=100", "train.pesq_workers=0",
                                     "loss.gan_start_fraction=0.5", "loss.gan_ramp_epochs=0"]),
    "creative_smoke": ("configs/creative_smoke.yaml", COMMON),
}
TIMING = ("sec", "samples_per_sec", "lr_")


def _run(repo_root, run_dir, config, overrides) -> list[dict]:
    from trainer.core.runstate import read_metrics

    sets = [a for item in overrides for a in ("--set", item)]
    proc = subprocess.run([sys.executable, "-m", "trainer.train", "--config", config, "--run-dir",
                           str(run_dir), *sets], cwd=repo_root, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == EXIT_FINISHED, proc.stderr[-3000:]
    return [{k: v for k, v in r.items() if isinstance(v, (int, float)) and not any(t in k for t in TIMING)}
            for r in read_metrics(run_dir) if r.get("kind") == "step"]


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_step_losses_match_golden(repo_root, tmp_path, case):
    steps = _run(repo_root, tmp_path / "run", *CASES[case])
    path = repo_root / f"tests/golden/{case}_step_losses.json"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(json.dumps(steps, indent=1) + "\n")
    golden = json.loads(path.read_text())
    assert [s["step"] for s in steps] == [g["step"] for g in golden]
    for got, want in zip(steps, golden, strict=True):
        assert set(got) == set(want), (got, want)
        for key in want:
            assert got[key] == pytest.approx(want[key], rel=1e-4, abs=1e-7), (got["step"], key, got[key], want[key])
