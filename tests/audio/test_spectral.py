"""The fp32 STFT front-end: shapes, perfect reconstruction, compression, autocast safety."""

import numpy as np
import pytest
import torch

from trainer.audio import spectral
from trainer.core.config import StftConfig
from trainer.data.synth import SENTENCES, babble_like_noise, mix_at_snr, synthesize_speech


@pytest.fixture(scope="module")
def speech() -> torch.Tensor:
    clean = [synthesize_speech(text, 16000)[:16000] for text in SENTENCES[:2]]
    clean = [np.pad(c, (0, 16000 - len(c))) for c in clean]
    noisy = mix_at_snr(clean[1], babble_like_noise(16000, seed=1), 5.0)
    padded = np.pad(clean[0][:15937], (0, 63))  # zero padding, as the data loader pads short clips
    return torch.from_numpy(np.stack([clean[0], noisy, padded]).astype(np.float32))


@pytest.mark.parametrize("window", ["hann", "hamming"])
def test_istft_inverts_stft(speech, window):
    cfg = StftConfig(window=window)
    for length in (16000, 15937):  # a length that is not a multiple of the hop
        wave = speech[:, :length]
        spec = spectral.stft(wave, cfg)
        assert spec.dtype == torch.complex64
        assert spec.shape == (3, cfg.n_fft // 2 + 1, length // cfg.hop_length + 1) == (3, 201, length // 100 + 1)
        back = spectral.istft(spec, cfg, length)
        assert back.shape == wave.shape
        assert torch.allclose(back, wave, atol=1e-5)


def test_compress_round_trip_and_magnitude(speech):
    cfg = StftConfig()
    spec = spectral.stft(speech, cfg)
    compressed = spectral.compress(spec, cfg.compress_factor, cfg.eps)
    # phase kept, magnitude ~ m ** 0.3 where m >> eps
    loud = spec.abs() > 1e-3
    assert torch.allclose(torch.angle(compressed[loud]), torch.angle(spec[loud]), atol=1e-4)
    assert torch.allclose(compressed.abs()[loud], spec.abs()[loud] ** 0.3, rtol=1e-4)
    assert torch.allclose(spectral.compressed_magnitude(spec, cfg.compress_factor, cfg.eps),
                          compressed.abs(), rtol=1e-5, atol=1e-7)
    back = spectral.decompress(compressed, cfg.compress_factor, cfg.eps)
    assert torch.allclose(back, spec, rtol=1e-4, atol=1e-5)
    wave = spectral.istft(back, cfg, speech.shape[-1])
    assert torch.allclose(wave, speech, atol=1e-4)


def test_compression_is_zero_and_finite_at_silence():
    cfg = StftConfig()
    spec = torch.zeros(1, 3, 4, dtype=torch.complex64, requires_grad=True)
    compressed = spectral.compress(spec, cfg.compress_factor, cfg.eps)
    assert torch.count_nonzero(compressed) == 0
    magnitude = spectral.compressed_magnitude(spec, cfg.compress_factor, cfg.eps)
    (compressed.real.sum() + compressed.imag.sum() + magnitude.sum()).backward()
    assert torch.isfinite(torch.view_as_real(spec.grad)).all()


def test_stft_stays_fp32_under_autocast(speech):
    cfg = StftConfig()
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        spec = spectral.stft(speech.to(torch.bfloat16), cfg)
        compressed = spectral.compress(spec, cfg.compress_factor, cfg.eps)
        magnitude = spectral.compressed_magnitude(spec, cfg.compress_factor, cfg.eps)
        wave = spectral.istft(spectral.decompress(compressed, cfg.compress_factor, cfg.eps), cfg, speech.shape[-1])
    assert spec.dtype == compressed.dtype == torch.complex64
    assert magnitude.dtype == wave.dtype == torch.float32
    # The same numbers as without autocast (given the same bf16-rounded input).
    assert torch.equal(spec, spectral.stft(speech.to(torch.bfloat16).float(), cfg))


def test_stft_rejects_wrong_shapes():
    cfg = StftConfig()
    with pytest.raises(ValueError, match="batch, samples"):
        spectral.stft(torch.zeros(16000), cfg)
    with pytest.raises(ValueError, match="complex"):
        spectral.istft(torch.zeros(1, 201, 10), cfg, 900)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_window_follows_the_wave_to_the_gpu(speech):
    cfg = StftConfig()
    with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
        spec = spectral.stft(speech.cuda(), cfg)
        wave = spectral.istft(spec, cfg, speech.shape[-1])
    assert spec.dtype == torch.complex64 and wave.dtype == torch.float32
    assert torch.allclose(wave.cpu(), speech, atol=1e-4)
