"""GPU acceptance in one command: do the CUDA paths of the toolkit work on this machine?

    bash benchmarks/gpu_acceptance.sh [REPORT.json]     (default logs/gpu_acceptance/report.json)

On a machine with CUDA it checks, each step timed and written to the JSON report:

1. ``collectives``: one process per visible GPU under torchrun joins the process group the trainer
   uses (NCCL for CUDA tensors, gloo for the loop's CPU agreement tensors) — even with one GPU —
   and runs every ``trainer.core.dist`` collective plus one DDP step of the generator in bf16.
2. ``train``: the smoke config on ``cuda`` under torchrun, bf16 autocast, deterministic CUDA.
3. ``resume``: the same run again, SIGUSR2 to every rank mid-run (as SLURM's ``--signal``), which
   must save and stop; a second start must continue at the exact step and finish. Per-step
   losses are compared with the straight run (bit-exact expected under ``train.deterministic``;
   the largest difference is reported either way).
4. ``evaluate``: ``trainer.evaluate --run-dir`` (enhance the demo test set on the GPU with every
   kept checkpoint, then score), timed.
5. ``throughput``: ``benchmarks/bench_throughput.py`` on the GPU for the full-size BSRNN preset
   (batch 4 x 2 s, bf16 and fp32) and the published CMGAN and MP-SENet presets (``configs/cmgan.yaml``,
   ``configs/mpsenet.yaml``: batch 4 x 2 s, bf16; other configs with ``--throughput-config``): ms per
   phase (data, generator, PESQ label wait, discriminator), samples/s, peak CUDA memory, for serial
   and overlapped PESQ labelling and no labelling at all, in the same run, with the ratios.
6. ``peer`` (only with ``--peer-src DIR``; DIR holds checkouts ``CMGAN`` and ``MP-SENet`` of the authors'
   repositories): ``benchmarks/bench_peer_step.py``, our step against the authors' train.py step on the
   same weights and batch (4 x 2 s), ours in fp32 and bf16: s/step, samples/s, ratio, peak memory.
7. ``profile`` (only with ``--profile``): ``benchmarks/profile_step.py`` for BSRNN base, CMGAN and MP-SENet
   (bf16), with and without PESQ labels: synchronisations per step, host time outside ops, kernel gaps.

Without CUDA it prints ``skipped: no CUDA device`` and exits 0 (``--allow-cpu`` runs the same
steps on the CPU, to test this script). Exit 1 if any step failed; the report says which and why.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SMOKE = ["train.epochs=2", "train.max_steps_per_epoch=6", "train.log_every=1", "checkpoint.every_steps=0",
         "valid.max_utterances=4", "train.amp=true", "train.deterministic=true"]
STOP_AFTER_STEP = 3


def _run(cmd: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, **kwargs)


def _torchrun(nproc: int, port: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
            "--master_port", str(port)]


def _train_cmd(nproc: int, port: int, run_dir: Path, device: str) -> list[str]:
    sets = [a for item in (*SMOKE, f"train.device={device}") for a in ("--set", item)]
    return [*_torchrun(nproc, port), "-m", "trainer.train", "--config", "configs/smoke.yaml",
            "--run-dir", str(run_dir), *sets]


def _step_losses(run_dir: Path) -> list[tuple[int, float, float]]:
    from trainer.core.runstate import read_metrics

    return [(r["step"], r["loss"], r["d_loss"]) for r in read_metrics(run_dir) if r.get("kind") == "step"]


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _rank_pids(agent_pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(agent_pid)], capture_output=True, text=True).stdout.split()
    pids = []
    for child in out:
        try:
            if any(e.startswith(b"RANK=") for e in Path(f"/proc/{child}/environ").read_bytes().split(b"\0")):
                pids.append(int(child))
        except OSError:
            continue
    return pids


# ----- the checks (each returns its details; raising marks it failed) -------------------------------
def check_collectives(nproc: int, port: int, device: str) -> dict:
    proc = _run([*_torchrun(nproc, port), str(Path(__file__).resolve()), "--worker-collectives", device],
                timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"exit {proc.returncode}: {_tail(proc.stderr)}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def worker_collectives(device_name: str) -> None:
    """One rank of the collectives check (run under torchrun)."""
    import datetime

    import torch
    import torch.distributed as torch_dist
    from torch.nn.parallel import DistributedDataParallel

    from trainer.core import dist
    from trainer.core.config import load_config
    from trainer.core.env import read_env
    from trainer.core.registry import build_generator

    env = read_env()
    device = dist.select_device(env, device_name)
    torch_dist.init_process_group(backend=dist.backend_for(device), rank=env.rank, world_size=env.world_size,
                                  init_method=f"tcp://{env.master_addr}:{env.master_port}",
                                  timeout=datetime.timedelta(minutes=5),
                                  **({"device_id": device} if device.type == "cuda" else {}))
    summed = dist.all_reduce_sum(torch.tensor([1.0, float(env.rank)]))
    assert summed.tolist() == [env.world_size, sum(range(env.world_size))], summed
    assert dist.all_gather_objects(env.rank) == list(range(env.world_size))
    assert dist.broadcast_object({"from": env.rank}) == {"from": 0}
    dist.barrier()
    cfg = load_config(ROOT / "configs/smoke.yaml")
    torch.manual_seed(0)
    model = build_generator(cfg).to(device)
    ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    noisy = torch.randn(2, 16000, device=device, generator=None)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        out = ddp(noisy)
    out["wave"].float().pow(2).mean().backward()
    norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf")))
    norms = dist.all_gather_objects(norm)
    assert all(n == norms[0] for n in norms), f"gradients differ across ranks after DDP: {norms}"
    assert torch.isfinite(torch.tensor(norm)), norm
    if env.is_main:
        print(json.dumps({"world_size": env.world_size, "backend": dist.backend_for(device),
                          "ddp_grad_norm": norm}))
    torch_dist.destroy_process_group()


def check_train(nproc: int, port: int, run_dir: Path, device: str) -> dict:
    started = time.perf_counter()
    proc = _run(_train_cmd(nproc, port, run_dir, device), timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"exit {proc.returncode}: {_tail(proc.stderr)}")
    steps = [r for r in _metrics(run_dir) if r.get("kind") == "step"]
    epochs = [r for r in _metrics(run_dir) if r.get("kind") == "epoch"]
    return {"seconds": time.perf_counter() - started, "steps": len(steps),
            "samples_per_sec_median": sorted(r["samples_per_sec"] for r in steps)[len(steps) // 2],
            "sec_per_step_median": sorted(r["sec_per_step"] for r in steps)[len(steps) // 2],
            "valid_pesq": [r.get("valid_pesq") for r in epochs], "final_loss": steps[-1]["loss"]}


def _metrics(run_dir: Path) -> list[dict]:
    from trainer.core.runstate import read_metrics

    return read_metrics(run_dir)


def check_resume(nproc: int, port: int, run_dir: Path, straight_dir: Path, device: str) -> dict:
    from trainer.core.runstate import read_state

    proc = subprocess.Popen(_train_cmd(nproc, port, run_dir, device), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + 600
    signalled = []
    while time.monotonic() < deadline and proc.poll() is None:
        if any(step >= STOP_AFTER_STEP for step, _, _ in _step_losses(run_dir)):
            for pid in _rank_pids(proc.pid):  # SLURM's --signal reaches every process of the step
                os.kill(pid, signal.SIGUSR2)
                signalled.append(pid)
            break
        time.sleep(0.05)
    output, _ = proc.communicate(timeout=600)
    state = read_state(run_dir)
    if not signalled or state.get("status") != "checkpointed":
        raise RuntimeError(f"no save on SIGUSR2 (state {state.get('status')}): {_tail(output)}")
    stopped_at = state["step"]
    resumed = _run(_train_cmd(nproc, port, run_dir, device), timeout=600)
    if resumed.returncode != 0 or "resumed" not in resumed.stderr:
        raise RuntimeError(f"resume: exit {resumed.returncode}: {_tail(resumed.stderr)}")
    a, b = _step_losses(straight_dir), _step_losses(run_dir)
    if [s for s, *_ in a] != [s for s, *_ in b]:
        raise RuntimeError(f"steps differ: straight {[s for s, *_ in a]}, resumed {[s for s, *_ in b]}")
    max_diff = max(max(abs(x[1] - y[1]), abs(x[2] - y[2])) for x, y in zip(a, b, strict=True))
    result = {"stopped_at_step": stopped_at, "steps": len(b), "bit_exact": a == b, "max_abs_loss_diff": max_diff,
              "first_differing_step": next((x[0] for x, y in zip(a, b, strict=True) if x != y), None)}
    if max_diff > 1e-3:
        raise RuntimeError(f"resumed losses differ from the straight run by up to {max_diff:.3g}: {result}")
    return result


def check_evaluate(run_dir: Path, device: str, out: Path) -> dict:
    started = time.perf_counter()
    proc = _run([sys.executable, "-m", "trainer.evaluate", "--run-dir", str(run_dir), "--device", device,
                 "--json", str(out), "--no-progress"], timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"exit {proc.returncode}: {_tail(proc.stderr)}")
    summary = json.loads(out.read_text())
    last = summary["summaries"]["last"]
    if last["num_failed"] or not last["num_valid"]:
        raise RuntimeError(f"{last['num_failed']} of the test files failed: {last['failures']}")
    return {"seconds": time.perf_counter() - started, "enhance_and_score_seconds": summary["wall_seconds"],
            "files": last["num_valid"], "checkpoints": len(summary["summaries"]) - 1,
            "pesq": {name: s["pesq"] for name, s in summary["summaries"].items()}, "table": _tail(proc.stdout, 12)}


# (name, preset, extra arguments): the BSRNN base in bf16 and fp32, the published presets in bf16.
THROUGHPUT = (("base_bf16", "configs/base.yaml", ["--amp"]), ("base_fp32", "configs/base.yaml", []),
              ("cmgan_bf16", "configs/cmgan.yaml", ["--amp"]), ("mpsenet_bf16", "configs/mpsenet.yaml", ["--amp"]))


def check_throughput(device: str, work: Path, configs: list[str] | None, steps: int) -> dict:
    """bench_throughput.py per preset: serial vs overlapped PESQ labelling vs none, in the same run.

    ``configs``: run these (bf16 and fp32 each) instead of :data:`THROUGHPUT`."""
    runs = THROUGHPUT if not configs else [(f"{Path(c).stem}_{p}", c, extra) for c in configs
                                           for p, extra in (("bf16", ["--amp"]), ("fp32", []))]
    results = {}
    cores = os.cpu_count() or 1
    workers = min(4, max(1, cores // 2))
    common = ["--set", "data.demo=true", "--set", "data.train_dir=", "--set", "data.valid_dir=",
              "--steps", str(steps), "--rounds", "2", "--device", device,
              "--pesq-workers", str(workers), "--torch-threads", str(max(1, cores - workers))]
    for name, config, extra in runs:
        out = work / f"throughput_{name}.json"
        proc = _run([sys.executable, "benchmarks/bench_throughput.py", "--config", config, *common, *extra,
                     "--json", str(out)], timeout=900)
        if proc.returncode != 0:
            raise RuntimeError(f"{name}: exit {proc.returncode}: {_tail(proc.stderr)}")
        results[name] = json.loads(out.read_text())
        results[name]["table"] = _tail(proc.stdout, 8)
        print(results[name]["table"], flush=True)
    return results


def check_peer(device: str, work: Path, peer_src: Path) -> dict:
    """bench_peer_step.py: our step against the authors' train.py step (CMGAN, MP-SENet) at the recipe's
    batch 4 x 2 s, fp32 and ours in bf16 too; ``peer_src`` holds checkouts named CMGAN and MP-SENet."""
    out = work / "peer.json"
    extra = ["--batch", "4", "--seconds", "2", "--steps", "10", "--rounds", "2", "--amp"] if device == "cuda" \
        else ["--batch", "1", "--seconds", "1", "--steps", "1", "--rounds", "1"]
    proc = _run([sys.executable, "benchmarks/bench_peer_step.py", "--cmgan-src", str(peer_src / "CMGAN"),
                 "--mpsenet-src", str(peer_src / "MP-SENet"), "--device", device, *extra, "--json", str(out)],
                timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"exit {proc.returncode}: {_tail(proc.stderr)}")
    result = json.loads(out.read_text())
    result["table"] = _tail(proc.stdout, 8)
    print(result["table"], flush=True)
    return result


def check_profile(device: str, work: Path) -> dict:
    """profile_step.py per preset (bf16 on CUDA), with the PESQ pool and without: synchronisations per
    step, host time outside ops, kernel gaps."""
    results = {}
    amp = ["--amp"] if device == "cuda" else []
    for config in ("configs/base.yaml", "configs/cmgan.yaml", "configs/mpsenet.yaml"):
        for labels in ((), ("--no-labels",)):
            name = f"{Path(config).stem}{'_no_labels' if labels else ''}"
            out = work / f"profile_{name}.json"
            proc = _run([sys.executable, "benchmarks/profile_step.py", "--config", config, "--device", device,
                         "--set", "data.train_dir=", "--set", "data.valid_dir=", "--steps", "5", *amp, *labels,
                         "--json", str(out)], timeout=900)
            if proc.returncode != 0:
                raise RuntimeError(f"{name}: exit {proc.returncode}: {_tail(proc.stderr)}")
            results[name] = {k: v for k, v in json.loads(out.read_text()).items() if k != "top_ops_table"}
            print(_tail(proc.stdout, 40), flush=True)
    return results


def environment(device: str) -> dict:
    import torch

    info = {"torch": torch.__version__, "cuda": torch.version.cuda, "device": device,
            "python": sys.version.split()[0], "cpu_cores": os.cpu_count()}
    if device == "cuda":
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        info["gpu_memory_gib"] = torch.cuda.get_device_properties(0).total_memory / 2**30
    return info


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--report", type=Path, default=ROOT / "logs/gpu_acceptance/report.json")
    parser.add_argument("--allow-cpu", action="store_true", help="run the steps on the CPU (to test this script)")
    parser.add_argument("--skip", action="append", default=[], help="leave a step out (e.g. throughput)")
    parser.add_argument("--throughput-config", action="append", default=None, metavar="CONFIG",
                        help="configs for the throughput step, bf16 and fp32 each (repeatable; default: "
                             "BSRNN base bf16 and fp32, CMGAN and MP-SENet bf16)")
    parser.add_argument("--throughput-steps", type=int, default=8, help="measured steps per block and mode")
    parser.add_argument("--peer-src", type=Path, metavar="DIR",
                        help="also run bench_peer_step.py (step 'peer') with DIR/CMGAN and DIR/MP-SENet, checkouts "
                             "of the authors' repositories")
    parser.add_argument("--profile", action="store_true", help="also run profile_step.py per preset (step 'profile')")
    parser.add_argument("--worker-collectives", metavar="DEVICE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker_collectives:
        worker_collectives(args.worker_collectives)
        return 0
    import torch

    if not torch.cuda.is_available() and not args.allow_cpu:
        print("skipped: no CUDA device")
        return 0
    device = "cuda" if torch.cuda.is_available() else "cpu"
    nproc = torch.cuda.device_count() if device == "cuda" else 1
    work = args.report.parent
    work.mkdir(parents=True, exist_ok=True)
    for sub in ("straight", "resumed"):
        import shutil

        shutil.rmtree(work / sub, ignore_errors=True)
    port = 29600 + os.getpid() % 300
    report = {"environment": environment(device), "nproc": nproc, "checks": {}}
    print(f"GPU acceptance on {report['environment'].get('gpus', device)}; {nproc} process(es); report {args.report}")
    steps = [
        ("collectives", lambda: check_collectives(nproc, port, device)),
        ("train", lambda: check_train(nproc, port + 1, work / "straight", device)),
        ("resume", lambda: check_resume(nproc, port + 2, work / "resumed", work / "straight", device)),
        ("evaluate", lambda: check_evaluate(work / "resumed", device, work / "evaluate.json")),
        ("throughput", lambda: check_throughput(device, work, args.throughput_config, args.throughput_steps)),
        *([("peer", lambda: check_peer(device, work, args.peer_src.expanduser().resolve()))] if args.peer_src else []),
        *([("profile", lambda: check_profile(device, work))] if args.profile else []),
    ]
    for name, step in steps:
        if name in args.skip:
            continue
        started = time.perf_counter()
        try:
            result = {"ok": True, **step()}
        except Exception as exc:  # one failed step must not hide the others
            result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        result["wall_seconds"] = round(time.perf_counter() - started, 1)
        report["checks"][name] = result
        print(f"{'PASS' if result['ok'] else 'FAIL'} {name} ({result['wall_seconds']} s)"
              + ("" if result["ok"] else f": {result['error']}"), flush=True)
        args.report.write_text(json.dumps(report, indent=2, default=str) + "\n")
    report["ok"] = all(c["ok"] for c in report["checks"].values())
    args.report.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(("all checks passed" if report["ok"] else "FAILED") + f"; report: {args.report}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
