"""Pictures of signals for TensorBoard (numpy + a matplotlib colormap; no figures, no torch).

- :func:`log_spectrogram`: the log-magnitude STFT (dB) of a wave, frames of ``n_fft`` every ``hop``
  samples with a Hann window (the training front-end's sizes, so a bin is the model's bin);
- :func:`spectrogram_image`: that, ``dynamic_range_db`` below a reference level (pass the same
  ``ref_db`` for noisy, clean and enhanced so that their colours compare), as an RGB image;
- :func:`matrix_image`: any (rows, frames) array in [0, 1], e.g. a mask over time, as an RGB image.

Images are (H, W, 3) uint8 with the lowest row (frequency bin 0, mask channel 0) at the bottom,
at most :data:`MAX_ROWS` rows (neighbouring rows are averaged).
"""

from __future__ import annotations

import numpy as np

MAX_ROWS = 128  # rows per picture: a 400-point STFT's 201 bins become 101, a 1024-point one's 513 become 103


def log_spectrogram(wave: np.ndarray, n_fft: int, hop: int, eps: float = 1e-8) -> np.ndarray:
    """(n_fft // 2 + 1, frames) magnitude in dB; a wave shorter than one frame is zero-padded."""
    wave = np.asarray(wave, dtype=np.float64).reshape(-1)
    if len(wave) < n_fft:
        wave = np.pad(wave, (0, n_fft - len(wave)))
    frames = np.lib.stride_tricks.sliding_window_view(wave, n_fft)[::hop]
    spectrum = np.fft.rfft(frames * np.hanning(n_fft + 1)[:-1], axis=-1)  # periodic Hann
    return 20.0 * np.log10(np.abs(spectrum).T + eps)


def _pool_rows(values: np.ndarray, max_rows: int) -> np.ndarray:
    factor = -(-values.shape[0] // max_rows)
    if factor <= 1:
        return values
    padded = np.pad(values, ((0, (-values.shape[0]) % factor), (0, 0)), mode="edge")
    return padded.reshape(-1, factor, values.shape[1]).mean(axis=1)


def matrix_image(values: np.ndarray, colormap: str = "magma", max_rows: int = MAX_ROWS) -> np.ndarray:
    """(rows, frames) values in [0, 1] (clipped) -> (H, W, 3) uint8, row 0 at the bottom."""
    import matplotlib  # only the colormap registry: no figure, no backend

    values = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float64)), 0.0, 1.0)
    if values.ndim != 2 or values.size == 0:
        raise ValueError(f"matrix_image needs a non-empty 2-D array, got shape {values.shape}")
    rgba = matplotlib.colormaps[colormap](_pool_rows(values, max_rows)[::-1], bytes=True)
    return np.ascontiguousarray(rgba[..., :3])


def spectrogram_image(wave: np.ndarray, n_fft: int, hop: int, *, ref_db: float | None = None,
                      dynamic_range_db: float = 80.0) -> np.ndarray:
    """The log spectrogram from ``ref_db - dynamic_range_db`` (black) to ``ref_db`` (bright) as an
    RGB image; ``ref_db`` defaults to the wave's own peak."""
    db = log_spectrogram(wave, n_fft, hop)
    top = float(db.max()) if ref_db is None else ref_db
    return matrix_image((db - (top - dynamic_range_db)) / dynamic_range_db)


def peak_db(wave: np.ndarray, n_fft: int, hop: int) -> float:
    """The loudest bin of the wave's log spectrogram (a shared ``ref_db`` for related signals)."""
    return float(log_spectrogram(wave, n_fft, hop).max())
