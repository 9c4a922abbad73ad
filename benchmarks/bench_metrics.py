"""Speed of the full metric suite: ours (vectorised) vs a straightforward per-frame-loop baseline.

    .venv/bin/python benchmarks/bench_metrics.py [--num-files 12] [--workers 1 2]

Both run on the same espeak-ng sentences mixed with noise at several SNRs, in the same run.
Prints milliseconds of wall time per second of audio for: the PESQ + STOI floor (they are
computed the same way by both), the loop baseline, ours, the ratio, the largest per-file
difference between the two, then the scaling of ``trainer.evaluate.score_pairs`` with workers.

The loop baseline (``loop_metrics``) is an independent, plain per-frame implementation of the
same formulas (see ``trainer.metrics``); the test suite also uses it as a parity reference.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")  # "one core": no BLAS threads spinning on a shared machine

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.metrics import labeler  # noqa: E402
from trainer.metrics import quality as metrics  # noqa: E402

# ------------------------------------------------------------------ per-frame loop baseline


def _window(win: int) -> np.ndarray:
    return np.array([0.5 * (1 - math.cos(2 * math.pi * n / (win + 1))) for n in range(1, win + 1)])


def loop_ssnr(clean, enhanced, sr):
    win = int(round(0.03 * sr))
    hop = win // 4
    window = _window(win)
    values = []
    for frame in range(int(len(clean) / hop - win / hop)):
        c = clean[frame * hop: frame * hop + win] * window
        e = enhanced[frame * hop: frame * hop + win] * window
        ratio = np.dot(c, c) / (np.dot(c - e, c - e) + np.spacing(1)) + np.spacing(1)
        values.append(min(35.0, max(-10.0, 10 * math.log10(ratio))))
    return float(np.mean(values))


def _band_filters(sr, half):
    filters = np.zeros((25, half))
    for band in range(25):
        center = metrics._CENTER_FREQ[band] / (sr // 2) * half
        width = metrics._BANDWIDTH[band] / (sr // 2) * half
        gain = math.log(metrics._BANDWIDTH[0]) - math.log(metrics._BANDWIDTH[band])
        for k in range(half):
            value = math.exp(-11 * ((k - math.floor(center)) / width) ** 2 + gain)
            filters[band, k] = value if value > math.exp(-30 / (2 * 2.303)) else 0.0
    return filters


def _peak(energy, slope, band):
    if slope[band] > 0:
        n = band
        while n < len(slope) and slope[n] > 0:
            n += 1
        return energy[n - 1]
    n = band
    while n >= 0 and slope[n] <= 0:
        n -= 1
    return energy[n + 1]


def loop_wss(clean, enhanced, sr):
    win = int(round(0.03 * sr))
    hop = win // 4
    window = _window(win)
    n_fft = 2 ** math.ceil(math.log2(2 * win))
    filters = _band_filters(sr, n_fft // 2)
    values = []
    for frame in range(int(len(clean) / hop - win / hop)):
        per_signal = []
        for signal in (clean, enhanced):
            x = signal[frame * hop: frame * hop + win] / 32768 * window
            power = np.abs(np.fft.fft(x, n_fft)[: n_fft // 2]) ** 2
            energy = [10 * math.log10(max(float(np.dot(f, power)), 1e-10)) for f in filters]
            slope = [energy[b + 1] - energy[b] for b in range(24)]
            top = max(energy)
            weights = [20 / (20 + top - energy[b]) * 1 / (1 + _peak(energy, slope, b) - energy[b]) for b in range(24)]
            per_signal.append((slope, weights))
        (slope_c, w_c), (slope_e, w_e) = per_signal
        w = [(a + b) / 2 for a, b in zip(w_c, w_e, strict=True)]
        values.append(sum(wb * (sc - se) ** 2 for wb, sc, se in zip(w, slope_c, slope_e, strict=True)) / sum(w))
    return np.array(values)


def _lpc(frame, order):
    r = [float(np.dot(frame[: len(frame) - k], frame[k:])) for k in range(order + 1)]
    a = [0.0] * order
    error = r[0]
    for i in range(order):
        k = (r[i + 1] - sum(a[j] * r[i - j] for j in range(i))) / error if error > 0 else 0.0
        a = [a[j] - k * a[i - 1 - j] for j in range(i)] + [k] + a[i + 1:]
        error *= 1 - k * k
    return np.array(r), np.array([1.0] + [-x for x in a])


def loop_llr(clean, enhanced, sr):
    win = int(round(0.03 * sr))
    hop = win // 4
    window = _window(win)
    order = 10 if sr < 10000 else 16
    values = []
    for frame in range(int((len(clean) - win) / hop)):
        r_c, a_c = _lpc(clean[frame * hop: frame * hop + win] * window, order)
        _, a_e = _lpc(enhanced[frame * hop: frame * hop + win] * window, order)
        toeplitz = np.array([[r_c[abs(i - j)] for j in range(order + 1)] for i in range(order + 1)])
        numerator, denominator = a_e @ toeplitz @ a_e, a_c @ toeplitz @ a_c
        if r_c[0] > 0 and numerator > 0 and denominator > 0:
            values.append(math.log(numerator / denominator))
    return np.array(values)


def loop_metrics(clean, enhanced, sr=16000) -> dict:
    """The full suite with per-frame loops for SSNR, WSS and LLR (PESQ and STOI as in ours)."""
    clean, enhanced, sr = metrics.prepare_pair(clean, enhanced, sr)
    pesq = metrics.pesq_score(clean, enhanced, sr)
    ssnr = loop_ssnr(clean, enhanced, sr)
    llr = metrics.trimmed_mean(loop_llr(clean, enhanced, sr))
    wss = metrics.trimmed_mean(loop_wss(clean, enhanced, sr))
    composites = metrics.composite_scores(pesq, llr, wss, ssnr)
    return {"pesq": pesq, **composites, "ssnr": ssnr, "stoi": metrics.stoi_score(clean, enhanced, sr)}


# ------------------------------------------------------------------ benchmark


def make_files(num_files: int, sr: int = 16000) -> list[tuple[str, np.ndarray, np.ndarray]]:
    from trainer.data.synth import SENTENCES, VOICES, babble_like_noise, mix_at_snr, synthesize_speech

    snrs = (-5, 0, 5, 10, 15, 20)
    files = []
    for i in range(num_files):
        clean = synthesize_speech(SENTENCES[i % len(SENTENCES)], sr, voice=VOICES[i % len(VOICES)]).astype(np.float64)
        noise = babble_like_noise(len(clean), sr, seed=i)
        files.append((f"utt{i:03d}", clean, mix_at_snr(clean, noise, snrs[i % len(snrs)]).astype(np.float64)))
    return files


def _time(fn, files, repeats: int) -> tuple[tuple[float, float], list]:
    """Best-of-``repeats`` (wall, CPU) seconds (the machine is shared; the minimum is the least disturbed)."""
    wall, cpu, out = math.inf, math.inf, []
    for _ in range(repeats):
        started, started_cpu = time.perf_counter(), time.process_time()
        out = [fn(clean, enhanced) for _, clean, enhanced in files]
        wall, cpu = min(wall, time.perf_counter() - started), min(cpu, time.process_time() - started_cpu)
    return (wall, cpu), out


def _floor(clean, enhanced):
    return metrics.pesq_score(clean, enhanced, 16000), metrics.stoi_score(clean, enhanced, 16000)


def _ours_frame_measures(clean, enhanced):
    return (np.mean(metrics.segmental_snr_frames(clean, enhanced, 16000)),
            metrics.trimmed_mean(metrics.wss_frames(clean, enhanced, 16000)),
            metrics.trimmed_mean(metrics.llr_frames(clean, enhanced, 16000)))


def _loop_frame_measures(clean, enhanced):
    return (loop_ssnr(clean, enhanced, 16000), metrics.trimmed_mean(loop_wss(clean, enhanced, 16000)),
            metrics.trimmed_mean(loop_llr(clean, enhanced, 16000)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-files", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs per measurement")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="pool sizes for the scaling table")
    args = parser.parse_args(argv)
    from trainer.evaluate import score_pairs

    files = make_files(args.num_files)
    audio_seconds = sum(len(c) for _, c, _ in files) / 16000
    print(f"{len(files)} espeak-ng files, {audio_seconds:.1f} s of audio, SNR -5..20 dB, best of {args.repeats}")
    metrics.compute_metrics(files[0][1], files[0][2])  # imports and caches outside the timings
    t_floor, _ = _time(_floor, files, args.repeats)
    t_loop, loop_out = _time(loop_metrics, files, args.repeats)
    t_ours, ours_out = _time(metrics.compute_metrics, files, args.repeats)
    t_loop_frames, _ = _time(_loop_frame_measures, files, args.repeats)
    t_ours_frames, _ = _time(_ours_frame_measures, files, args.repeats)
    diff = max(abs(o[k] - b[k]) for o, b in zip(ours_out, loop_out, strict=True) for k in b)
    per_s = 1000 / audio_seconds

    def line(label, seconds):
        return f"  {label:<34}{seconds[0] * per_s:8.1f} {seconds[1] * per_s:8.1f}"

    print("one process, one thread; ms per second of audio:   wall      CPU")
    print(line("PESQ + STOI alone (the floor)", t_floor))
    print(line("full suite, per-frame-loop", t_loop))
    print(line("full suite, ours (vectorised)", t_ours) + f"   ({t_ours[0] / t_floor[0]:.2f}x the floor, wall)")
    print(line("SSNR+WSS+LLR only, per-frame-loop", t_loop_frames))
    print(line("SSNR+WSS+LLR only, ours", t_ours_frames))
    print(f"  speed-up vs loop, full suite:   wall {t_loop[0] / t_ours[0]:.2f}x  CPU {t_loop[1] / t_ours[1]:.2f}x")
    print(f"  speed-up vs loop, SSNR+WSS+LLR: wall {t_loop_frames[0] / t_ours_frames[0]:.1f}x  "
          f"CPU {t_loop_frames[1] / t_ours_frames[1]:.1f}x")
    print(f"  max per-file |ours - loop| over all six metrics: {diff:.2e}")
    print("scaling of trainer.evaluate.score_pairs, wall ms per second of audio (warm pool; start-up apart):")
    base = None
    for workers in args.workers:
        if workers == 1:
            started = time.perf_counter()
            score_pairs(files, 16000, 1)
            elapsed, startup = time.perf_counter() - started, 0.0
        else:
            pool = labeler.process_pool(workers)
            started = time.perf_counter()
            score_pairs(files[:workers], 16000, pool=pool)  # starts and warms every worker
            startup = time.perf_counter() - started
            started = time.perf_counter()
            score_pairs(files, 16000, pool=pool)
            elapsed = time.perf_counter() - started
            pool.shutdown(wait=True)
        base = base or elapsed
        print(f"  workers={workers:<3d} {elapsed * per_s:8.1f} ms/s  speed-up {base / elapsed:5.2f}x  "
              f"(pool start-up {startup:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
