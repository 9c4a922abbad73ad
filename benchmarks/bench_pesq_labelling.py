"""Discriminator-label throughput: ``PesqLabeler`` (persistent pool) vs a fresh
``joblib.Parallel(n_jobs=-1)`` per call (the CMGAN ``batch_pesq`` way), same batches, same run.

    .venv/bin/python benchmarks/bench_pesq_labelling.py [--batch-size 4] [--num-batches 30] [--workers N]

Batches of 2 s espeak-ng crops (the training crop) with noise at 0-20 dB stand in for generator
output; every ``--silent-every``-th batch holds one silent clip. Prints clips per second for
both, the ratio, the pool start-up cost, and how many labels each way keeps (the old way drops
any batch that holds a failed clip; ours masks that clip only).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.core.env import local_cores  # noqa: E402
from trainer.metrics.labeler import PesqLabeler  # noqa: E402


def _old_pesq(clean, enhanced):
    from pesq import pesq

    try:
        return pesq(16000, clean, enhanced, "wb")
    except Exception:  # as in CMGAN: any failure is -1
        return -1


def old_batch_pesq(clean: np.ndarray, enhanced: np.ndarray):
    """CMGAN's batch_pesq: a Parallel(n_jobs=-1) per call; None when any item failed."""
    from joblib import Parallel, delayed

    scores = np.array(Parallel(n_jobs=-1)(delayed(_old_pesq)(c, e) for c, e in zip(clean, enhanced, strict=True)))
    if -1 in scores:
        return None
    return ((scores - 1) / 3.5).astype(np.float32)


def make_batches(batch_size: int, num_batches: int, silent_every: int, seconds: float = 2.0):
    from trainer.data.synth import SENTENCES, VOICES, babble_like_noise, mix_at_snr, synthesize_speech

    rng = np.random.default_rng(0)
    crop = int(seconds * 16000)
    speech = [synthesize_speech(s, 16000, voice=VOICES[i % len(VOICES)]) for i, s in enumerate(SENTENCES[:8])]
    speech = [np.pad(s, (0, max(0, crop - len(s)))) for s in speech]
    batches = []
    for b in range(num_batches):
        clean = np.zeros((batch_size, crop), np.float32)
        enhanced = np.zeros_like(clean)
        for i in range(batch_size):
            source = speech[rng.integers(len(speech))]
            start = rng.integers(0, len(source) - crop + 1)
            clean[i] = source[start:start + crop]
            noise = babble_like_noise(crop, seed=int(rng.integers(1 << 30)))
            enhanced[i] = mix_at_snr(clean[i], noise, float(rng.uniform(0, 20)))
        if silent_every and b % silent_every == 0:
            enhanced[0] = 0.0
        batches.append((clean, enhanced))
    return batches


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--num-batches", type=int, default=30)
    parser.add_argument("--workers", type=int, default=None, help="PesqLabeler pool size (default: cores per rank)")
    parser.add_argument("--silent-every", type=int, default=5, help="one silent clip in every N-th batch (0 = none)")
    args = parser.parse_args(argv)
    workers = args.workers or local_cores()
    batches = make_batches(args.batch_size, args.num_batches, args.silent_every)
    num_clips = args.batch_size * args.num_batches
    print(f"{args.num_batches} batches x {args.batch_size} clips of 2 s; PesqLabeler workers={workers}, "
          f"joblib n_jobs=-1")

    started = time.perf_counter()
    with PesqLabeler(workers) as labeler:
        labeler.score(*batches[0])  # starts the pool
        t_start = time.perf_counter() - started
        old_batch_pesq(*batches[0])  # joblib's first call starts its executor too
        # interleaved batch by batch so that load from other users hits both ways alike
        t_old = t_new = 0.0
        old_kept = new_kept = 0
        for clean, enhanced in batches:
            started = time.perf_counter()
            labels = old_batch_pesq(clean, enhanced)
            t_old += time.perf_counter() - started
            old_kept += 0 if labels is None else len(labels)
            started = time.perf_counter()
            new_kept += int(labeler.score(clean, enhanced)[1].sum())
            t_new += time.perf_counter() - started

    print(f"  joblib.Parallel per call : {num_clips / t_old:7.1f} clips/s  "
          f"({1000 * t_old / args.num_batches:.0f} ms/batch)")
    print(f"  PesqLabeler (warm pool)  : {num_clips / t_new:7.1f} clips/s  "
          f"({1000 * t_new / args.num_batches:.0f} ms/batch)")
    print(f"  ratio                    : {t_old / t_new:7.2f}x   (pool start-up once: {t_start:.2f} s)")
    print(f"  labels kept              : old {old_kept}/{num_clips} (a batch with a failed clip is dropped), "
          f"ours {new_kept}/{num_clips} (failed clips masked)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
