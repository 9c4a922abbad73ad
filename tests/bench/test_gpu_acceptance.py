"""The GPU acceptance command: skips cleanly without CUDA; its steps run end to end on the CPU."""

import json
import subprocess

import pytest
import torch

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA machine runs the real thing")


def test_skips_without_cuda(repo_root, tmp_path):
    proc = subprocess.run(["bash", "benchmarks/gpu_acceptance.sh", str(tmp_path / "report.json")], cwd=repo_root,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "skipped: no CUDA device"
    assert not (tmp_path / "report.json").exists()


@pytest.mark.slow
def test_steps_pass_on_cpu(repo_root, tmp_path):
    report_path = tmp_path / "report.json"
    proc = subprocess.run(["bash", "benchmarks/gpu_acceptance.sh", str(report_path), "--allow-cpu",
                           "--skip", "throughput"], cwd=repo_root, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(report_path.read_text())
    assert report["ok"] and set(report["checks"]) == {"collectives", "train", "resume", "evaluate"}
    assert report["checks"]["resume"]["bit_exact"] and report["checks"]["resume"]["steps"] == 12
    assert report["checks"]["evaluate"]["files"] == 8
