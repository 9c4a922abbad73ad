"""Speech-quality metrics that match published VoiceBank+DEMAND numbers: PESQ, STOI, SSNR, CSIG, CBAK, COVL;
plus ESTOI (pystoi ``extended=True``) and SI-SDR (mean-removed, dB) as URGENT/ESPnet report them.

numpy + pesq + pystoi (+ scipy for resampling) only; importing this module never imports torch.

Published CMGAN / MP-SENet / BSRNN tables were scored with one Python port of Loizou's
``composite.m``: ``src/tools/compute_metrics.py`` of github.com/ruizhecao96/CMGAN (MIT). This
module follows its conventions exactly (our own vectorised code; no per-frame Python loops):

- PESQ: ITU-T P.862.2 wide-band from the ``pesq`` package at 16 kHz (narrow-band at 8 kHz,
  where the port would fail). STOI: ``pystoi`` (classic STOI, validated against the MATLAB
  original); the port ships its own STOI that differs by up to ~0.01 per file.
- Frames: 30 ms Hann windows ``0.5 * (1 - cos(2 pi n / (N + 1)))``, n = 1..N, hop N // 4;
  ``int(L / hop - N / hop)`` frames (LLR: ``int((L - N) / hop)``), the same number in exact arithmetic.
- WSS: 25 Gaussian critical-band filters (cut below -30 dB) on a ``2**ceil(log2(2N))``-point
  power spectrum; every frame is scaled by 1/32768 even for float input, band energies are floored
  at 1e-10 before dB; Klatt weights with Kmax = 20, Klocmax = 1 (and the port's nearest-peak search).
- LLR: LPC order 16 (10 below 10 kHz) by autocorrelation + Levinson-Durbin,
  ``log(a_e R_c a_e' / a_c R_c a_c')``. Frames whose clean frame is digital silence are left out
  (the port produces NaN there).
- WSS and LLR are averaged over the lowest 95 % of frames (``round(0.95 * num_frames)``).
- Segmental SNR: ``10 log10(E_s / (E_n + eps) + eps)`` per frame, clipped to [-10, 35] dB,
  plain mean (not trimmed).
- CSIG = 3.093 - 1.029 LLR + 0.603 PESQ - 0.009 WSS; CBAK = 1.634 + 0.478 PESQ - 0.007 WSS + 0.063 SSNR;
  COVL = 1.594 + 0.805 PESQ - 0.512 LLR - 0.007 WSS; each clamped to [1, 5].
- Unequal lengths are cut to the shorter signal (here only within ``LENGTH_TOLERANCE_SECONDS``).

Our additions, never silently producing NaN: lengths that differ by more than 10 ms (the
tolerance of ``prepare --length-tolerance-ms``; more than one STFT hop of the models: an enhanced
file cut short would otherwise be scored on its first part only), a reference shorter than
0.25 s, a silent reference or a silent enhanced signal (peak below one 16-bit step), non-finite
samples or a PESQ/STOI failure give a result whose metrics are all None and whose ``error`` names the reason;
:func:`summarize` leaves such results out of the means and counts them. Sample rates other than
8 and 16 kHz are resampled to 16 kHz (polyphase, scipy) with a one-time warning.

The process pools that run these functions (the discriminator's PESQ labels during training,
validation and evaluation) are :mod:`trainer.metrics.labeler`.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from functools import lru_cache

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from trainer.core.log import get_logger, warn_once

METRIC_KEYS = ("pesq", "csig", "cbak", "covl", "ssnr", "stoi", "estoi", "si_sdr")
COMPOSITE_KEYS = ("csig", "cbak", "covl")
NATIVE_RATES = (8000, 16000)
MIN_REFERENCE_SECONDS = 0.25
LENGTH_TOLERANCE_SECONDS = 0.010  # longer differences are an error for that pair, never a silent trim
SILENCE_PEAK = 1.0 / 65536  # below half a 16-bit step: the file is all zeros as int16
TRIM_FRACTION = 0.95  # WSS and LLR: mean of the lowest 95 % of frames
SSNR_RANGE = (-10.0, 35.0)
_EPS = float(np.spacing(1))
_CHUNK_FRAMES = 2048  # bounds memory for long files; not a per-frame loop

_CENTER_FREQ = np.array([50.0000, 120.000, 190.000, 260.000, 330.000, 400.000, 470.000, 540.000, 617.372,
                         703.378, 798.717, 904.128, 1020.38, 1148.30, 1288.72, 1442.54, 1610.70, 1794.16,
                         1993.93, 2211.08, 2446.71, 2701.97, 2978.04, 3276.17, 3597.63])
_BANDWIDTH = np.array([70.0000, 70.0000, 70.0000, 70.0000, 70.0000, 70.0000, 70.0000, 77.3724, 86.0056,
                       95.3398, 105.411, 116.256, 127.914, 140.423, 153.823, 168.154, 183.457, 199.776,
                       217.153, 235.631, 255.255, 276.072, 298.126, 321.465, 346.136])

log = get_logger("metrics")


class MetricInputError(ValueError):
    """A pair of signals that cannot be scored; the message is the short failure reason."""


# ---------------------------------------------------------------- frame-level measures (vectorised)

def frame_setup(sr: int) -> tuple[int, int, np.ndarray]:
    """Window length, hop and the port's Hann window for sample rate ``sr``."""
    win = int(round(30 * sr / 1000))
    hop = win // 4
    window = 0.5 * (1 - np.cos(2 * np.pi * np.arange(1, win + 1) / (win + 1)))
    return win, hop, window


def _frames(x: np.ndarray, win: int, hop: int, num_frames: int) -> np.ndarray:
    return sliding_window_view(x, win)[::hop][:num_frames]


def trimmed_mean(values: np.ndarray) -> float:
    """Mean of the lowest ``round(0.95 * n)`` values (the port's convention for WSS and LLR)."""
    keep = round(values.size * TRIM_FRACTION)
    if keep == 0:
        raise MetricInputError("too few frames")
    return float(np.mean(np.sort(values)[:keep]))


def segmental_snr_frames(clean: np.ndarray, enhanced: np.ndarray, sr: int) -> np.ndarray:
    """Per-frame segmental SNR in dB, clipped to [-10, 35]."""
    win, hop, window = frame_setup(sr)
    num_frames = int(len(clean) / hop - win / hop)
    c = _frames(clean, win, hop, num_frames) * window
    e = _frames(enhanced, win, hop, num_frames) * window
    signal_energy = np.sum(c * c, axis=1)
    noise_energy = np.sum((c - e) ** 2, axis=1)
    snr = 10 * np.log10(signal_energy / (noise_energy + _EPS) + _EPS)
    return np.clip(snr, *SSNR_RANGE)


@lru_cache(maxsize=4)
def _critical_band_filters(sr: int, n_fft: int) -> np.ndarray:
    half = n_fft // 2
    max_freq = int(sr / 2)
    f0 = _CENTER_FREQ / max_freq * half
    bw = _BANDWIDTH / max_freq * half
    norm = np.log(_BANDWIDTH[0]) - np.log(_BANDWIDTH)
    j = np.arange(half)
    filters = np.exp(-11 * ((j[None, :] - np.floor(f0)[:, None]) / bw[:, None]) ** 2 + norm[:, None])
    min_factor = math.exp(-30.0 / (2.0 * 2.303))  # the -30 dB point
    filters = np.where(filters > min_factor, filters, 0.0)
    last_used_bin = int(np.nonzero(filters.any(axis=0))[0].max())
    return np.ascontiguousarray(filters[:, : last_used_bin + 1])


def _nearest_peaks(energy: np.ndarray, slope: np.ndarray) -> np.ndarray:
    """The port's peak search: rising slope looks right, falling or flat looks left."""
    num_slopes = slope.shape[1]
    index = np.arange(num_slopes)
    rising = slope > 0
    # first index >= i whose slope is not rising (num_slopes if none), minus one
    stop = np.where(rising, num_slopes, index)
    first_not_rising = np.minimum.accumulate(stop[:, ::-1], axis=1)[:, ::-1]
    # last index <= i whose slope is rising (-1 if none), plus one
    last_rising = np.maximum.accumulate(np.where(rising, index, -1), axis=1)
    pick = np.where(rising, first_not_rising - 1, last_rising + 1)
    return np.take_along_axis(energy, pick, axis=1)


def _band_energies_db(frames: np.ndarray, window: np.ndarray, n_fft: int, filters: np.ndarray) -> np.ndarray:
    num_bins = filters.shape[1]  # the filters are zero above the last band (about 4 kHz)
    spectrum = np.fft.rfft(frames * window, n_fft, axis=1)[:, :num_bins]
    power = spectrum.real ** 2 + spectrum.imag ** 2
    return 10 * np.log10(np.maximum(power @ filters.T, 1e-10))


def wss_frames(clean: np.ndarray, enhanced: np.ndarray, sr: int) -> np.ndarray:
    """Per-frame weighted spectral slope distance (Klatt 1982 as in composite.m)."""
    win, hop, window = frame_setup(sr)
    window = window / 32768  # the port's int16 scaling, applied to float input too
    n_fft = int(2 ** math.ceil(math.log2(2 * win)))
    filters = _critical_band_filters(sr, n_fft)
    num_frames = int(len(clean) / hop - win / hop)
    kmax, klocmax = 20.0, 1.0
    out = np.empty(max(num_frames, 0))
    clean_frames, enhanced_frames = _frames(clean, win, hop, num_frames), _frames(enhanced, win, hop, num_frames)
    for start in range(0, num_frames, _CHUNK_FRAMES):
        weights, slopes = [], []
        for frames in (clean_frames[start:start + _CHUNK_FRAMES], enhanced_frames[start:start + _CHUNK_FRAMES]):
            energy = _band_energies_db(frames, window, n_fft, filters)
            slope = np.diff(energy, axis=1)
            below = energy[:, :-1]
            w_max = kmax / (kmax + energy.max(axis=1, keepdims=True) - below)
            w_locmax = klocmax / (klocmax + _nearest_peaks(energy, slope) - below)
            weights.append(w_max * w_locmax)
            slopes.append(slope)
        w = (weights[0] + weights[1]) / 2
        out[start:start + _CHUNK_FRAMES] = np.sum(w * (slopes[0] - slopes[1]) ** 2, axis=1) / np.sum(w, axis=1)
    return out


def _autocorrelation(frames: np.ndarray, order: int) -> np.ndarray:
    win = frames.shape[1]
    return np.stack([np.einsum("ij,ij->i", frames[:, : win - k], frames[:, k:]) for k in range(order + 1)], axis=1)


def lpc_levinson(r: np.ndarray) -> np.ndarray:
    """LPC polynomials ``[1, -a_1 .. -a_p]`` for each row of autocorrelations ``r`` (F, p + 1).

    Levinson-Durbin run on all frames at once (the loop is over the model order). A frame with
    zero prediction error (digital silence) keeps the remaining coefficients at zero.
    """
    num_frames, order = r.shape[0], r.shape[1] - 1
    a = np.zeros((num_frames, order))
    error = r[:, 0].copy()
    for i in range(order):
        sum_term = np.einsum("ij,ij->i", a[:, :i], r[:, i:0:-1]) if i else 0.0
        ok = error > 0
        k = np.where(ok, (r[:, i + 1] - sum_term) / np.where(ok, error, 1.0), 0.0)
        if i:
            a[:, :i] = a[:, :i] - a[:, i - 1::-1] * k[:, None]
        a[:, i] = k
        error = (1 - k * k) * error
    return np.concatenate([np.ones((num_frames, 1)), -a], axis=1)


def llr_frames(clean: np.ndarray, enhanced: np.ndarray, sr: int) -> np.ndarray:
    """Per-frame log-likelihood ratio; frames with a digitally silent clean frame are left out."""
    win, hop, window = frame_setup(sr)
    order = 10 if sr < 10000 else 16
    num_frames = int((len(clean) - win) / hop)
    clean_frames, enhanced_frames = _frames(clean, win, hop, num_frames), _frames(enhanced, win, hop, num_frames)
    lags = np.abs(np.arange(order + 1)[:, None] - np.arange(order + 1)[None, :])
    parts = []
    for start in range(0, num_frames, _CHUNK_FRAMES):
        r_clean = _autocorrelation(clean_frames[start:start + _CHUNK_FRAMES] * window, order)
        r_enh = _autocorrelation(enhanced_frames[start:start + _CHUNK_FRAMES] * window, order)
        a_clean, a_enh = lpc_levinson(r_clean), lpc_levinson(r_enh)
        toeplitz = r_clean[:, lags]
        numerator = np.einsum("fi,fij,fj->f", a_enh, toeplitz, a_enh)
        denominator = np.einsum("fi,fij,fj->f", a_clean, toeplitz, a_clean)
        keep = (r_clean[:, 0] > 0) & (numerator > 0) & (denominator > 0)
        parts.append(np.log(numerator[keep] / denominator[keep]))
    return np.concatenate(parts) if parts else np.empty(0)


def composite_scores(pesq_mos: float, llr: float, wss: float, ssnr: float) -> dict[str, float]:
    """CSIG, CBAK, COVL (Hu & Loizou 2008 regressions), each clamped to [1, 5]."""
    def clamp(value: float) -> float:
        return float(min(5.0, max(1.0, value)))
    return {
        "csig": clamp(3.093 - 1.029 * llr + 0.603 * pesq_mos - 0.009 * wss),
        "cbak": clamp(1.634 + 0.478 * pesq_mos - 0.007 * wss + 0.063 * ssnr),
        "covl": clamp(1.594 + 0.805 * pesq_mos - 0.512 * llr - 0.007 * wss),
    }


# ---------------------------------------------------------------- input checks and per-file metrics

def resample_to_16k(wave: np.ndarray, sr: int) -> np.ndarray:
    from scipy.signal import resample_poly

    g = math.gcd(16000, sr)
    return resample_poly(wave, 16000 // g, sr // g)


def prepare_pair(clean, enhanced, sr: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Mono float64 signals of equal length at 8 or 16 kHz; raises MetricInputError with the reason."""
    if not isinstance(sr, int | np.integer) or sr <= 0:
        raise MetricInputError(f"bad sample rate {sr!r}")
    clean, enhanced = np.asarray(clean, dtype=np.float64), np.asarray(enhanced, dtype=np.float64)
    clean, enhanced = np.squeeze(clean), np.squeeze(enhanced)
    if clean.ndim != 1 or enhanced.ndim != 1:
        raise MetricInputError("not mono (expected 1-D signals)")
    if abs(len(clean) - len(enhanced)) > round(LENGTH_TOLERANCE_SECONDS * sr):
        raise MetricInputError(f"length mismatch: enhanced {len(enhanced) / sr:.2f} s, "
                               f"reference {len(clean) / sr:.2f} s "
                               f"({len(enhanced)} vs {len(clean)} samples; at most "
                               f"{1000 * LENGTH_TOLERANCE_SECONDS:g} ms may differ)")
    length = min(len(clean), len(enhanced))
    clean, enhanced = clean[:length], enhanced[:length]
    if not (np.all(np.isfinite(clean)) and np.all(np.isfinite(enhanced))):
        raise MetricInputError("non-finite samples")
    if length < MIN_REFERENCE_SECONDS * sr:
        raise MetricInputError(f"reference too short (< {MIN_REFERENCE_SECONDS} s)")
    if np.max(np.abs(clean)) < SILENCE_PEAK:
        raise MetricInputError("silent reference")
    if np.max(np.abs(enhanced)) < SILENCE_PEAK:
        raise MetricInputError("silent enhanced signal")
    if sr not in NATIVE_RATES:
        warn_once(log, f"resample-{sr}", f"metrics: resampling {sr} Hz audio to 16000 Hz (PESQ needs 8 or 16 kHz)")
        clean, enhanced, sr = resample_to_16k(clean, sr), resample_to_16k(enhanced, sr), 16000
    return clean, enhanced, sr


def pesq_score(clean: np.ndarray, enhanced: np.ndarray, sr: int) -> float:
    """PESQ MOS-LQO (wide-band at 16 kHz, narrow-band at 8 kHz) of a prepared pair."""
    from pesq import pesq

    try:
        return float(pesq(sr, clean, enhanced, "wb" if sr == 16000 else "nb"))
    except Exception as exc:  # the C code raises its own error classes (no utterances, too short...)
        raise MetricInputError(f"pesq failed ({type(exc).__name__})") from exc


def stoi_score(clean: np.ndarray, enhanced: np.ndarray, sr: int, *, extended: bool = False) -> float:
    """pystoi's STOI (``extended=True``: ESTOI, Jensen & Taal 2016)."""
    from pystoi import stoi

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = float(stoi(clean, enhanced, sr, extended=extended))
    if value == 1e-5:  # pystoi's sentinel for "not enough speech frames"
        raise MetricInputError(f"{'estoi' if extended else 'stoi'} failed (too little speech)")
    return value


def si_sdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Scale-invariant SDR in dB (Le Roux et al. 2019), both signals mean-removed:
    ``10 log10(|a s|^2 / |a s - e|^2)`` with ``a = <e, s> / |s|^2``."""
    s = np.asarray(reference, dtype=np.float64) - np.mean(reference)
    e = np.asarray(estimate, dtype=np.float64) - np.mean(estimate)
    target = (np.sum(e * s) / np.sum(s * s)) * s  # np.sum, not BLAS dot: the same bits in every process
    error = target - e
    return float(10 * np.log10(np.sum(target * target) / max(np.sum(error * error), _EPS)))


def _empty_result() -> dict:
    return dict.fromkeys(METRIC_KEYS) | {"error": None}


def _resolve_which(which) -> set[str]:
    wanted = set(METRIC_KEYS if which is None else which)
    unknown = wanted - set(METRIC_KEYS)
    if unknown:
        raise ValueError(f"unknown metric(s) {sorted(unknown)}; choose from {', '.join(METRIC_KEYS)}")
    return wanted


def compute_metrics(clean, enhanced, sr: int = 16000, *, which=None) -> dict:
    """All (or ``which``) of PESQ, CSIG, CBAK, COVL, SSNR, STOI, ESTOI, SI-SDR for one utterance.

    Returns plain floats (None for metrics not asked for) and ``error``: None, or a short reason
    in which case every metric is None. Never NaN.
    """
    wanted = _resolve_which(which)
    result = _empty_result()
    try:
        clean, enhanced, sr = prepare_pair(clean, enhanced, sr)
        values: dict[str, float] = {}
        need_composites = bool(wanted & set(COMPOSITE_KEYS))
        if "ssnr" in wanted or need_composites:
            values["ssnr"] = float(np.mean(segmental_snr_frames(clean, enhanced, sr)))
        if "pesq" in wanted or need_composites:
            values["pesq"] = pesq_score(clean, enhanced, sr)
        if need_composites:
            llr_values = llr_frames(clean, enhanced, sr)
            if llr_values.size == 0:
                raise MetricInputError("no frames for LLR")
            llr, wss = trimmed_mean(llr_values), trimmed_mean(wss_frames(clean, enhanced, sr))
            values.update(composite_scores(values["pesq"], llr, wss, values["ssnr"]))
        if "stoi" in wanted:
            values["stoi"] = stoi_score(clean, enhanced, sr)
        if "estoi" in wanted:
            values["estoi"] = stoi_score(clean, enhanced, sr, extended=True)
        if "si_sdr" in wanted:
            values["si_sdr"] = si_sdr(clean, enhanced)
        if not all(math.isfinite(v) for v in values.values()):
            raise MetricInputError("non-finite metric")
    except MetricInputError as exc:
        result["error"] = str(exc)
        return result
    result.update({key: values[key] for key in wanted})
    return result


def summarize(results: list[dict]) -> dict:
    """Means over the valid results (error is None) plus ``num_valid``, ``num_failed``, ``failures``."""
    valid = [r for r in results if r.get("error") is None]
    summary: dict = {}
    for key in METRIC_KEYS:
        values = [r[key] for r in valid if r.get(key) is not None and math.isfinite(r[key])]
        summary[key] = float(np.mean(values)) if values else None
    summary["num_valid"] = len(valid)
    summary["num_failed"] = len(results) - len(valid)
    summary["failures"] = dict(Counter(r["error"] for r in results if r.get("error") is not None))
    return summary


# ---------------------------------------------------------------- discriminator labels for training
