"""DNSMOS P.835 (SIG, BAK, OVRL) and P.808 without a clean reference, as Microsoft's ``dnsmos_local.py``.

The ONNX models are the ones the ``speechmos`` wheel ships (``speechmos/dnsmos_models/sig_bak_ovr.onnx``
and ``model_v8.onnx``); they run with ``onnxruntime`` on the CPU. Neither package is a dependency of
the toolkit: ``pip install .[dnsmos]`` (or ``pip install speechmos==0.0.1.1 onnxruntime``) adds them.
``speechmos`` itself is never imported (it imports librosa, requests and pandas): only its model files
are read, so librosa is not needed at run time.

The reference's procedure, kept exactly:
- 16 kHz only (other rates are resampled first by the caller, who says so);
- a clip shorter than 9.01 s is doubled (``np.append(audio, audio)``) until it is long enough;
- windows of 9.01 s (144 160 samples) start every second; ``int(floor(len / fs) - 9.01) + 1`` of
  them, those shorter than 9.01 s skipped (the end ``int((i + 9.01) * 16000)`` rounds one sample short
  for i >= 7, so the reference never scores windows past 7 s: a 20 s clip has 7 windows; kept);
- P.835 takes the raw window; P.808 takes log-mel features of the window minus its last 160
  samples (n_fft 321, hop 160, 120 Slaney mels, centred frames with zero padding, power spectrum,
  ``power_to_db(ref=max)`` with librosa's 1e-10 floor and 80 dB top, then ``(x + 40) / 40``);
- raw SIG/BAK/OVRL go through the fixed polynomials of the non-personalised model;
- the clip's score is the mean over its windows.

Our differences are speed only: the sessions stay open for the life of the process (one per metric
pool worker), all windows of a clip go through each model in one call, and the mel features are
numpy (equal to librosa's to float rounding; tests/metrics/test_dnsmos.py checks against
``speechmos.dnsmos.run``).
"""

from __future__ import annotations

import math
from functools import lru_cache
from importlib import util
from pathlib import Path

import numpy as np

DNSMOS_KEYS = ("dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl", "dnsmos_p808")
SR = 16000
INPUT_SECONDS = 9.01
WINDOW = int(INPUT_SECONDS * SR)
N_FFT, HOP, N_MELS = 321, 160, 120
MISSING = ("DNSMOS needs the optional packages speechmos and onnxruntime: "
           "pip install 'speechmos==0.0.1.1' onnxruntime (or pip install .[dnsmos])")
# np.poly1d coefficients of the reference (highest power first), non-personalised model
_POLY = {"dnsmos_sig": (-0.08397278, 1.22083953, 0.0052439),
         "dnsmos_bak": (-0.13166888, 1.60915514, -0.39604546),
         "dnsmos_ovrl": (-0.06766283, 1.11546468, 0.04602535)}


class DnsmosUnavailable(RuntimeError):
    """The optional packages are missing; the message names them."""


def missing_packages() -> list[str]:
    """The optional packages DNSMOS needs that are not installed (empty when it can run)."""
    missing = [] if util.find_spec("speechmos") is not None else ["speechmos"]  # its model files only
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        missing.append("onnxruntime")
    return missing


def model_paths() -> tuple[Path, Path]:
    """(P.835 model, P.808 model) inside the installed speechmos package, without importing it."""
    spec = util.find_spec("speechmos")
    if spec is None or not spec.submodule_search_locations or missing_packages():
        raise DnsmosUnavailable(MISSING)
    folder = Path(next(iter(spec.submodule_search_locations))) / "dnsmos_models"
    paths = folder / "sig_bak_ovr.onnx", folder / "model_v8.onnx"
    for path in paths:
        if not path.is_file():
            raise DnsmosUnavailable(f"{path} is missing; reinstall speechmos==0.0.1.1")
    return paths


@lru_cache(maxsize=1)
def _sessions():
    """The two inference sessions, made once per process and kept (one intra-op thread each: the
    metric pool gives the parallelism, one process per core)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return tuple(ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                 for path in model_paths())


def _hz_to_mel(freq: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (linear below 1 kHz, logarithmic above), as librosa's ``htk=False``."""
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, math.log(6.4) / 27.0
    freq = np.asarray(freq, dtype=np.float64)
    mel = freq / f_sp
    return np.where(freq >= min_log_hz, min_log_hz / f_sp + np.log(np.maximum(freq, 1e-12) / min_log_hz) / logstep,
                    mel)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, math.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    return np.where(mel >= min_log_mel, min_log_hz * np.exp(logstep * (mel - min_log_mel)), f_sp * mel)


@lru_cache(maxsize=1)
def mel_filters() -> np.ndarray:
    """(120, 161) Slaney-normalised triangular filters from 0 Hz to 8 kHz (librosa.filters.mel's defaults)."""
    fft_freqs = np.fft.rfftfreq(N_FFT, 1.0 / SR)
    mel_points = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(SR / 2), N_MELS + 2))
    widths = np.diff(mel_points)
    ramps = mel_points[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    return weights * (2.0 / (mel_points[2:] - mel_points[:-2]))[:, None]


@lru_cache(maxsize=1)
def _window() -> np.ndarray:
    return 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)  # periodic Hann, as scipy's get_window


def p808_features(segments: np.ndarray) -> np.ndarray:
    """(N, frames, 120) float32 P.808 inputs for (N, samples) float32 segments."""
    padded = np.pad(segments, ((0, 0), (N_FFT // 2, N_FFT // 2)))  # centred frames, zero padding
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT, axis=1)[:, ::HOP]
    spectrum = np.fft.rfft(frames * _window().astype(np.float32), axis=2)
    power = spectrum.real ** 2 + spectrum.imag ** 2
    mel = power @ mel_filters().T.astype(np.float32)
    db = 10 * np.log10(np.maximum(mel, 1e-10))
    db -= 10 * np.log10(np.maximum(mel.max(axis=(1, 2), keepdims=True), 1e-10))  # ref=np.max per segment
    db = np.maximum(db, db.max(axis=(1, 2), keepdims=True) - 80.0)
    return ((db + 40) / 40).astype(np.float32)


def windows(audio: np.ndarray) -> np.ndarray:
    """(N, 144160) float32 windows of a 16 kHz clip, as the reference cuts them."""
    audio = np.asarray(audio, dtype=np.float32)
    while len(audio) < WINDOW:
        audio = np.append(audio, audio)
    num_hops = int(np.floor(len(audio) / SR) - INPUT_SECONDS) + 1
    starts = [i * SR for i in range(num_hops) if len(audio[i * SR: int((i + INPUT_SECONDS) * SR)]) >= WINDOW]
    return np.stack([audio[s: s + WINDOW] for s in starts])


def dnsmos(audio: np.ndarray) -> dict[str, float]:
    """DNSMOS SIG, BAK, OVRL (P.835) and P.808 MOS of one 16 kHz clip with samples in [-1, 1]."""
    primary, p808 = _sessions()
    segments = windows(audio)
    raw = primary.run(None, {"input_1": segments})[0].astype(np.float64)
    p808_mos = p808.run(None, {"input_1": p808_features(segments[:, :-HOP])})[0][:, 0]
    scores = {key: float(np.mean(np.poly1d(coefficients)(raw[:, column])))
              for column, (key, coefficients) in enumerate(_POLY.items())}
    return scores | {"dnsmos_p808": float(np.mean(p808_mos))}
