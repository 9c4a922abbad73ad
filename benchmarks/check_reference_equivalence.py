"""Prove the toolkit's CMGAN and MP-SENet equal to the authors' reference code.

    PYTHONPATH=/path/with/einops .venv/bin/python benchmarks/check_reference_equivalence.py \\
        --cmgan-src ~/src/CMGAN --mpsenet-src ~/src/MP-SENet [--json out.json] [--skip enhance]

``--cmgan-src`` / ``--mpsenet-src`` are the user's own checkouts of
https://github.com/ruizhecao96/CMGAN and https://github.com/yxlu-0102/MP-SENet (repository roots;
for CMGAN the ``src`` folder works too). The reference code is imported from there at run time;
none of it is part of this repository. The reference CMGAN conformer needs ``einops`` (a
dependency of the reference, not of ours). Modules the reference scripts import but this check
does not need get stand-ins while importing them (``librosa.load`` -> a soundfile read of 16 kHz
files, ``natsort``, ``rich.progress``); CMGAN's CUDA/torch-1 ``evaluation.py`` runs on the CPU under
torch 2 with the stand-ins of ``benchmarks/refcheck/common.py`` (``.cuda()`` is a no-op, torch 1's
real-layout ``stft``/``istft``).

For each model (``benchmarks/refcheck/cmgan.py``, ``mpsenet.py``) the script

1. builds the reference generator (``TSCNet(64, 201)``; ``MPNet(config.json)``) with
   ``torch.manual_seed(seed)``, perturbs *every* floating state entry with small seeded noise (so a
   mis-wired key cannot hide), and copies that state dict into ours with ``strict=True``;
2. compares parameter counts and state-dict keys, shapes and order;
3. runs the same random spectra through both networks (eval and train mode, float32 and float64)
   and compares parameter gradients (float64 hard check; float32 printed next to the reference's
   own float32-vs-float64 error). MP-SENet's phase is ``atan2`` of two maps and ill-conditioned
   where both are small, so its float32 phase/com are checked through those maps;
4. runs the wave->wave pipelines (the reference's inference steps with its own STFT functions) and
   a training-style batch through both;
5. checks our MetricGAN discriminator with the reference discriminator's weights, and the speech
   task's generator and discriminator losses with ``configs/cmgan.yaml`` / ``configs/mpsenet.yaml``
   on the reference's training-step tensors against train.py's expressions (and MP-SENet's PESQ
   labels: ``PesqLabeler`` vs ``batch_pesq``);
6. (``benchmarks/refcheck/enhance.py``) writes the perturbed weights in the official file layouts,
   runs ``python -m trainer.import_checkpoint`` and ``python -m trainer.enhance`` on a folder of
   16-bit wavs (0.7-3 s, -60 to -20 dBFS), and compares the written files with what the authors'
   own inference scripts (CMGAN ``evaluation.py``, MP-SENet ``inference.py``) write for them,
   before their 16-bit quantisation.

Exit status: 0 when every check passes; 1 when a network difference exceeds 1e-5 (absolute, on
outputs; relative to the largest value for gradients and losses), a wave difference exceeds 1e-4,
or a count / key list differs; 2 when the reference cannot be imported. About 5 CPU-minutes.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.refcheck.cmgan import check_cmgan  # noqa: E402
from benchmarks.refcheck.common import Report, import_cmgan, import_mpsenet  # noqa: E402
from benchmarks.refcheck.enhance import check_enhance  # noqa: E402
from benchmarks.refcheck.mpsenet import check_mpsenet  # noqa: E402

STEPS = ("cmgan", "mpsenet", "enhance")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cmgan-src", type=Path, required=True, help="checkout of ruizhecao96/CMGAN")
    parser.add_argument("--mpsenet-src", type=Path, required=True, help="checkout of yxlu-0102/MP-SENet")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--skip", action="append", default=[], choices=STEPS, help="leave a part out")
    parser.add_argument("--work-dir", type=Path, help="where the enhance check writes (default: a temporary folder)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    try:
        ref_cmgan = import_cmgan(args.cmgan_src.expanduser().resolve())
        ref_mpsenet = import_mpsenet(args.mpsenet_src.expanduser().resolve())
    except (ImportError, FileNotFoundError) as exc:
        print(f"check_reference_equivalence: cannot import the reference code: {exc!r}", file=sys.stderr)
        if isinstance(exc, ImportError) and "einops" in str(exc):
            print("  (the reference CMGAN needs einops: pip install einops into a path on PYTHONPATH)",
                  file=sys.stderr)
        return 2

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, seed {args.seed}")
    report = Report()
    if "cmgan" not in args.skip:
        check_cmgan(report, ref_cmgan, args.seed)
    if "mpsenet" not in args.skip:
        check_mpsenet(report, ref_mpsenet, args.seed)
    if "enhance" not in args.skip:
        with tempfile.TemporaryDirectory(prefix="refcheck-") as tmp:
            work = args.work_dir or Path(tmp)
            work.mkdir(parents=True, exist_ok=True)
            check_enhance(report, ref_cmgan, ref_mpsenet, args.seed, work)

    failed = report.failed
    print(f"\n{len(report.rows) - len(failed)}/{len(report.rows)} checks passed"
          + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    if args.json:
        args.json.write_text(json.dumps({"torch": torch.__version__, "seed": args.seed, "rows": report.rows},
                                        indent=1, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
