"""benchmarks/profile_step.py on the CPU: the loop's real step under torch.profiler, its device reads by
call site and the time outside ops."""

import json
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_profile_of_one_smoke_step_counts_the_steps_device_reads(repo_root, tmp_path):
    out = tmp_path / "profile.json"
    proc = subprocess.run([sys.executable, "benchmarks/profile_step.py", "--config", "configs/smoke.yaml",
                           "--no-labels", "--steps", "1", "--warmup", "1", "--set", "data.batch_size=1",
                           "--set", "data.crop_seconds=0.5", "--json", str(out)],
                          cwd=repo_root, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    step = result["per_step_median"]
    assert step["wall_ms"] > step["ops_ms"] > 0 and step["kernels"] == 0
    sites = result["device_reads_by_site"]
    # the record and the two gradient norms: one copy each (trainer/core/step.py's scalars_to_host)
    assert sum(n for site, n in sites.items() if site.startswith("trainer/core/step.py") and "cpu" in site) == 2
    assert not any(site.endswith(("__float__", "__bool__", "item")) for site in sites), sites
    assert "device reads from trainer/ per step" in proc.stdout
