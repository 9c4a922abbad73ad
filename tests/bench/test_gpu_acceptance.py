"""The GPU acceptance command: skips cleanly without CUDA; its steps run end to end on the CPU."""

import json
import subprocess
import sys

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
    proc = subprocess.run([sys.executable, "benchmarks/gpu_acceptance.py", "--report", str(report_path),
                           "--allow-cpu", "--skip", "throughput"], cwd=repo_root, capture_output=True, text=True,
                          timeout=900)  # what the .sh runs (test_skips_without_cuda runs the .sh)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(report_path.read_text())
    assert report["ok"] and set(report["checks"]) == {"collectives", "train", "resume", "evaluate"}
    assert report["checks"]["resume"]["bit_exact"] and report["checks"]["resume"]["steps"] == 12
    assert report["checks"]["evaluate"]["files"] == 8


@pytest.mark.slow
def test_throughput_step_compares_the_labelling_modes_on_cpu(repo_root, tmp_path):
    """The throughput step runs bench_throughput.py (real loop step, real PESQ pool) for every mode
    and reports the ratios; the smoke config and one step per block keep it short on the CPU."""
    report_path = tmp_path / "report.json"
    skip = [a for name in ("collectives", "train", "resume", "evaluate") for a in ("--skip", name)]
    proc = subprocess.run([sys.executable, "benchmarks/gpu_acceptance.py", "--report", str(report_path), "--allow-cpu",
                           *skip, "--throughput-config", "configs/smoke.yaml", "--throughput-steps", "1"],
                          cwd=repo_root, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    throughput = json.loads(report_path.read_text())["checks"]["throughput"]
    assert throughput["ok"] and set(throughput) >= {"smoke_bf16", "smoke_fp32"}
    for name in ("smoke_bf16", "smoke_fp32"):
        result = throughput[name]
        assert set(result["modes"]) == {"serial", "overlapped", "none"}
        for mode in result["modes"].values():
            assert mode["steps_measured"] == 2 and mode["samples_per_sec"] > 0
            assert set(mode["ms_per_step_median"]) == {"data", "generator", "label_wait", "discriminator",
                                                      "other", "total", "cpu", "pool_cpu"}
            assert mode["own_cores_step_ms_estimate"] > 0
        assert {"serial_over_overlapped", "serial_over_none", "overlapped_over_none",
                "overlapped_over_none_own_cores_estimate"} <= set(result["ratios"])
        assert result["modes"]["none"]["ms_per_step_median"]["pool_cpu"] == 0


def test_throughput_step_covers_the_published_presets():
    from trainer.core.config import load_config

    sys.path.insert(0, "benchmarks")
    try:
        import gpu_acceptance
    finally:
        sys.path.remove("benchmarks")
    names = {name: config for name, config, _ in gpu_acceptance.THROUGHPUT}
    assert names["cmgan_bf16"] == "configs/cmgan.yaml" and names["mpsenet_bf16"] == "configs/mpsenet.yaml"
    for config in names.values():  # the overrides the step passes are valid for every preset
        cfg = load_config(config, ["data.demo=true", "data.train_dir=", "data.valid_dir=", "data.batch_size=4",
                                   "data.crop_seconds=2.0"])
        assert cfg.data.demo and cfg.data.batch_size == 4


@pytest.mark.slow
@pytest.mark.parametrize("config", ["configs/cmgan_smoke.yaml", "configs/mpsenet_smoke.yaml"])
def test_bench_train_step_runs_the_generator_presets(repo_root, tmp_path, config):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "benchmarks/bench_train_step.py",
                           "--config", config, "--steps", "1", "--pesq-workers", "0", "--json", str(out)],
                          cwd=repo_root, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["generator_params"] > 0 and set(report["ms_per_step"]) == {"data", "generator", "pesq_labels",
                                                                             "discriminator"}
