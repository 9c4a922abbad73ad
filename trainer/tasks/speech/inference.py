"""Enhance whole signals with a speech generator (evaluation and the enhance command).

Input is normalised as in training (``data.normalize``: noisy to unit RMS over the whole file, the
CMGAN/MP-SENet convention) and the output scaled back, so enhanced files keep the input's level;
the factor is computed exactly as CMGAN's and MP-SENet's inference scripts compute it
(:func:`~trainer.audio.level.reference_unit_rms_scale`, no epsilon), so an imported official
checkpoint writes what the authors' script writes. Other sample rates are resampled to the
model's and back.

Long signals are cut into chunks of ``chunk`` samples that overlap by at least ``overlap`` samples
(the last chunk is aligned to the end, so no chunk is padded) and put back together by
overlap-add with linear cross-fades, so memory stays bounded by the chunk length. A signal no
longer than one chunk is enhanced in one pass, exactly as without chunking. Chunks of several
signals go through the generator together (``batch_size``), except for a generator whose batch
items influence each other (``couples_batch_items``, MP-SENet): it gets one chunk per call, as its
reference inference script does, so a file's output never depends on the other files. The default
chunk length is the generator's (:mod:`trainer.tasks.speech.chunking`: CMGAN's attention over time
needs memory growing with the square of the chunk).

A signal the generator cannot take is refused before any work by :meth:`ChunkedEnhancer.refusal`
(one line: non-finite samples, shorter than half an STFT frame, or a sample rate that
cannot be resampled cheaply, e.g. 16001 Hz from a damaged header); callers list it and go on.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from trainer.audio.level import reference_unit_rms_scale
from trainer.core.config import Config
from trainer.core.log import get_logger, warn_once
from trainer.tasks.speech.chunking import default_chunk_seconds

log = get_logger("enhance")
MAX_RATE = 768_000  # Hz: above any audio interface; a larger header value is damage
MAX_RESAMPLE_TAPS = 1_000_000  # 44.1 kHz -> 16 kHz needs 70 560; a coprime rate such as 16001 Hz 256 million


def _resample(wave: torch.Tensor, rate_in: int, rate_out: int) -> torch.Tensor:
    import torchaudio.functional as AF  # only for inputs at another rate than the model's

    return AF.resample(wave, rate_in, rate_out)


def chunk_starts(length: int, chunk: int, overlap: int) -> list[int]:
    """Starts of the chunks covering ``length`` samples: hop ``chunk - overlap``, the last chunk
    ending at ``length``; one chunk when the signal fits in it."""
    if length <= chunk:
        return [0]
    hop = chunk - overlap
    starts = list(range(0, length - chunk, hop))
    return [*starts, length - chunk]


def _crossfade_weights(chunk: int, overlap: int, first: bool, last: bool) -> np.ndarray:
    weights = np.ones(chunk, dtype=np.float64)
    ramp = (np.arange(overlap) + 0.5) / overlap
    if not first and overlap:
        weights[:overlap] = ramp
    if not last and overlap:
        weights[chunk - overlap:] = ramp[::-1]
    return weights


@dataclass
class _Signal:
    key: object
    length: int  # at the caller's rate
    rate: int
    model_wave: np.ndarray  # normalised, at the model's rate
    scale: float
    starts: list[int]
    out: np.ndarray = field(init=False)
    norm: np.ndarray = field(init=False)
    pending: int = field(init=False)

    def __post_init__(self):
        self.out = np.zeros(len(self.model_wave), dtype=np.float64)
        self.norm = np.zeros(len(self.model_wave), dtype=np.float64)
        self.pending = len(self.starts)


class ChunkedEnhancer:
    """Enhance many signals in bounded memory; see the module docstring."""

    def __init__(self, generator: torch.nn.Module, cfg: Config, *, chunk_seconds: float | None = None,
                 overlap_seconds: float = 1.0, batch_size: int = 1):
        if chunk_seconds is None:
            chunk_seconds = default_chunk_seconds(cfg.model.name, cfg.data.sample_rate)
        if chunk_seconds <= 2 * overlap_seconds or overlap_seconds < 0:
            raise ValueError(f"chunk_seconds ({chunk_seconds}) must exceed twice overlap_seconds ({overlap_seconds})")
        self.generator, self.cfg = generator, cfg
        self.rate = cfg.data.sample_rate
        self.chunk = int(round(chunk_seconds * self.rate))
        self.overlap = int(round(overlap_seconds * self.rate))
        self.batch_size = max(1, batch_size)
        if self.batch_size > 1 and getattr(generator, "couples_batch_items", False):
            warn_once(log, "couples-batch-items", f"{type(generator).__name__}: batch items influence each other "
                      "(the released model's attention runs across the batch); enhancing one chunk per call")
            self.batch_size = 1
        self.device = next(generator.parameters()).device

    def shortest(self, rate: int) -> int:
        """Fewest samples at ``rate`` the generator takes: more than half an STFT frame at the model's
        rate (the STFT's reflect padding)."""
        need = self.cfg.stft.n_fft // 2 + 1
        return need if rate == self.rate else math.ceil(need * rate / self.rate) + 1

    def refusal(self, noisy: np.ndarray, rate: int) -> str | None:
        """Why this signal cannot be enhanced (one line), or None."""
        finite = np.isfinite(noisy)
        if not finite.all():
            first = int(np.argmin(finite))
            return (f"{int(noisy.size - finite.sum())} non-finite samples (NaN or Inf), the first at "
                    f"{first / rate:.3f} s; repair the file or leave it out")
        if rate != self.rate:  # torchaudio's kernel has (rate / gcd) x (model rate / gcd) taps: 1 GB for 16001 Hz
            ratio = (rate // math.gcd(rate, self.rate)) * (self.rate // math.gcd(rate, self.rate))
            if not 0 < rate <= MAX_RATE or ratio > MAX_RESAMPLE_TAPS:
                return (f"sample rate {rate} Hz cannot be resampled to the model's {self.rate} Hz here; convert "
                        f"the file to {self.rate} Hz (e.g. sox IN -r {self.rate} OUT)")
        if len(noisy) < self.shortest(rate):
            return (f"too short: {len(noisy)} samples ({1000 * len(noisy) / rate:.1f} ms) at {rate} Hz; the model "
                    f"needs at least {self.shortest(rate)} ({1000 * self.shortest(rate) / rate:.1f} ms)")
        return None

    def _prepare(self, key, noisy: np.ndarray, rate: int) -> _Signal:
        wave = torch.as_tensor(np.asarray(noisy, dtype=np.float32))
        if wave.ndim != 1 or len(wave) == 0:
            raise ValueError(f"expected a non-empty mono signal, got shape {tuple(wave.shape)}")
        problem = self.refusal(wave.numpy(), rate)
        if problem:
            raise ValueError(problem)
        if rate != self.rate:
            warn_once(log, f"resample-{rate}", f"resampling {rate} Hz input to the model's {self.rate} Hz")
            wave = _resample(wave, rate, self.rate)
        scale = float(reference_unit_rms_scale(wave.numpy())) if self.cfg.data.normalize else 1.0
        model_wave = wave.numpy() * scale
        return _Signal(key, len(noisy), rate, model_wave, scale,
                       chunk_starts(len(model_wave), self.chunk, self.overlap))

    def _finish(self, signal: _Signal) -> np.ndarray:
        out = torch.from_numpy((signal.out / np.maximum(signal.norm, 1e-12)).astype(np.float32)) / signal.scale
        if signal.rate != self.rate:
            out = _resample(out, self.rate, signal.rate)
        out = out[:signal.length] if len(out) >= signal.length else torch.nn.functional.pad(
            out, (0, signal.length - len(out)))
        return out.numpy().astype(np.float32)

    @torch.no_grad()
    def _run(self, pieces: list[tuple[_Signal, int]]) -> None:
        """One generator call over same-length pieces (signal, start)."""
        batch = torch.stack([torch.from_numpy(
            np.ascontiguousarray(s.model_wave[start:start + min(self.chunk, len(s.model_wave))]))
            for s, start in pieces])
        out = self.generator(batch.to(self.device))["wave"].float().cpu().numpy()
        for (signal, start), estimate in zip(pieces, out, strict=True):
            index = signal.starts.index(start)
            weights = _crossfade_weights(len(estimate), self.overlap, index == 0, index == len(signal.starts) - 1)
            signal.out[start:start + len(estimate)] += weights * estimate
            signal.norm[start:start + len(estimate)] += weights
            signal.pending -= 1

    def enhance_many(self, items: Iterable[tuple[object, np.ndarray, int]]) -> Iterator[tuple[object, np.ndarray]]:
        """(key, noisy, rate) -> (key, enhanced at ``rate``, same length), in input order per batch.

        Signals shorter than a chunk are batched only with signals of the same length (no padding,
        so the result equals a one-pass enhancement); chunks of long signals batch together.
        """
        queue: dict[int, list[tuple[_Signal, int]]] = {}
        open_signals: list[_Signal] = []

        def flush(length: int) -> None:
            pieces = queue.pop(length, [])
            for i in range(0, len(pieces), self.batch_size):
                self._run(pieces[i:i + self.batch_size])

        for key, noisy, rate in items:
            signal = self._prepare(key, noisy, rate)
            open_signals.append(signal)
            piece_length = min(self.chunk, len(signal.model_wave))
            for start in signal.starts:
                queue.setdefault(piece_length, []).append((signal, start))
                if len(queue[piece_length]) >= self.batch_size:
                    flush(piece_length)
            yield from self._done(open_signals)
        for length in list(queue):
            flush(length)
        yield from self._done(open_signals)

    def _done(self, open_signals: list[_Signal]) -> Iterator[tuple[object, np.ndarray]]:
        while open_signals and open_signals[0].pending == 0:
            signal = open_signals.pop(0)
            yield signal.key, self._finish(signal)


def enhance(generator: torch.nn.Module, cfg: Config, noisy: np.ndarray, sample_rate: int, *,
            chunk_seconds: float | None = None, overlap_seconds: float = 1.0) -> np.ndarray:
    """Enhance one mono signal; returns float32 at ``sample_rate`` and the same length (``ValueError``
    with :meth:`ChunkedEnhancer.refusal`'s line for a signal it cannot take)."""
    enhancer = ChunkedEnhancer(generator, cfg, chunk_seconds=chunk_seconds, overlap_seconds=overlap_seconds)
    ((_, out),) = enhancer.enhance_many([(0, noisy, sample_rate)])
    return out
