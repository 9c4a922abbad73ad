"""The speech task's generator loss computes each published model's training loss.

With configs/cmgan.yaml's weights it is CMGAN's train.py objective (lines 124-151), with
configs/mpsenet.yaml's MP-SENet's (train.py lines 164-181): the expected values below are written
out from those lines (reference STFT conventions re-expressed in torch 2). Also: the anti-wrapping
phase terms, the padding mask of the new terms, and BSRNN's loss without the extra terms.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from trainer.core.config import load_config
from trainer.core.registry import build_generator
from trainer.tasks.speech import losses
from trainer.tasks.speech.models import build_discriminator, mpsenet

TWO_PI = 2 * math.pi
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _phases(seed=0, shape=(2, 201, 30)):
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1) * math.pi


def _reference_anti_wrapping(x):  # MP-SENet models/model.py anti_wrapping_function
    return torch.abs(x - torch.round(x / (2 * math.pi)) * 2 * math.pi)


def _batch(length=8000, seed=0):
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(length) / 16000
    clean = torch.stack([0.3 * torch.sin(2 * math.pi * f * t) * (1 + torch.sin(2 * math.pi * 3 * t))
                         for f in (220, 330)])
    noisy = clean + 0.1 * torch.randn(clean.shape, generator=gen)
    return clean, noisy


def _models(config, seed=0):
    cfg = load_config(config, ["model.num_channels=8", "model.num_layers=1", "discriminator.num_channels=4"])
    torch.manual_seed(seed)
    return cfg, build_generator(cfg).train(), build_discriminator(cfg).eval()


def test_phase_losses_vanish_for_identical_phases_and_ignore_2pi_wraps():
    ref, est = _phases(1), _phases(2)
    for value in losses.phase_losses(ref, ref):
        assert value.dim() == 0 and float(value) == 0.0
    wraps = torch.randint(-3, 4, ref.shape, generator=torch.Generator().manual_seed(3)).double() * TWO_PI
    for value in losses.phase_losses(ref, ref + wraps):
        assert float(value) < 1e-12
    for a, b in zip(losses.phase_losses(ref, est), losses.phase_losses(ref + wraps, est - wraps), strict=True):
        assert float(a) == pytest.approx(float(b), abs=1e-12)


def test_anti_wrapping_matches_the_reference_and_stays_in_range():
    x = torch.linspace(-20, 20, 4001, dtype=torch.float64)
    assert torch.equal(losses.anti_wrapping(x), _reference_anti_wrapping(x))
    assert float(losses.anti_wrapping(x).max()) <= math.pi + 1e-12


def test_group_delay_runs_along_frequency_and_iaf_along_frames():
    est = (0.3 * torch.arange(30, dtype=torch.float64)).expand(2, 201, 30)  # linear in time only
    ip, gd, iaf = losses.phase_losses(torch.zeros_like(est), est)
    assert float(gd) == pytest.approx(0.0, abs=1e-12) and float(iaf) == pytest.approx(0.3)


def test_mpsenet_preset_loss_is_train_py_line_181():
    cfg, generator, disc = _models("configs/mpsenet.yaml")
    clean, noisy = _batch()
    out = generator(noisy)
    total, terms = losses.generator_loss(out, clean, cfg, cfg.loss.w_gan, disc)

    clean_mag, clean_pha, clean_com = mpsenet.mag_pha_stft(clean)  # train.py:121
    mag_g, pha_g, com_g, audio_g = out["mag"], out["pha"], out["com"], out["wave"]
    mag_g_hat, _, com_g_hat = mpsenet.mag_pha_stft(audio_g)  # train.py:127
    aw = _reference_anti_wrapping
    loss_pha = (aw(clean_pha - pha_g).mean() + aw(torch.diff(clean_pha, dim=1) - torch.diff(pha_g, dim=1)).mean()
                + aw(torch.diff(clean_pha, dim=2) - torch.diff(pha_g, dim=2)).mean())
    expected = {
        "mag": F.mse_loss(clean_mag, mag_g),
        "phase": loss_pha,
        "ri": F.mse_loss(clean_com, com_g) * 2,
        "consistency": F.mse_loss(com_g, com_g_hat) * 2,
        "time": F.l1_loss(clean, audio_g),
        "gan": F.mse_loss(disc(clean_mag, mag_g_hat).flatten(), torch.ones(2)),
    }
    loss_gen_all = (expected["mag"] * 0.9 + expected["phase"] * 0.3 + expected["ri"] * 0.1
                    + expected["consistency"] * 0.1 + expected["gan"] * 0.05 + expected["time"] * 0.2)
    assert set(terms) == set(expected)
    for name, value in expected.items():
        assert float(terms[name]) == pytest.approx(float(value.detach()), rel=1e-5), name
    assert float(total.detach()) == pytest.approx(float(loss_gen_all.detach()), rel=1e-5)


def test_cmgan_preset_loss_is_its_train_py():
    cfg, generator, disc = _models("configs/cmgan.yaml")
    clean, noisy = _batch()
    out = generator(noisy)
    total, terms = losses.generator_loss(out, clean, cfg, cfg.loss.w_gan, disc)

    spec = torch.stft(clean, 400, 100, window=torch.hamming_window(400), onesided=True, return_complex=True)
    mag, phase = spec.abs() ** 0.3, spec.angle()  # utils.power_compress (train.py:88-103)
    clean_real, clean_imag, clean_mag = mag * torch.cos(phase), mag * torch.sin(phase), mag
    est_real, est_imag, est_mag = out["spec"].real, out["spec"].imag, out["mag"]
    expected = {
        "ri": F.mse_loss(est_real, clean_real) + F.mse_loss(est_imag, clean_imag),  # train.py:136-138
        "mag": F.mse_loss(est_mag, clean_mag),  # train.py:133
        "time": torch.mean(torch.abs(out["wave"] - clean)),  # train.py:140
        "gan": F.mse_loss(disc(clean_mag, est_mag).flatten(), torch.ones(2)),  # train.py:126-131
    }
    assert set(terms) == set(expected)
    for name, value in expected.items():
        assert float(terms[name]) == pytest.approx(float(value.detach()), rel=1e-4, abs=1e-7), name
    weighted = 0.1 * expected["ri"] + 0.9 * expected["mag"] + 0.2 * expected["time"] + 0.05 * expected["gan"]
    assert float(total.detach()) == pytest.approx(float(weighted.detach()), rel=1e-4)


def test_padding_does_not_count_in_the_phase_and_consistency_terms():
    """A zero-padded item's terms are those of its real frames (frame n kept when n * 100 + 200 <= length)."""
    cfg, generator, _ = _models("configs/mpsenet.yaml")
    clean, noisy = _batch(8000)
    length = 6000
    clean[:, length:] = 0.0
    noisy[:, length:] = 0.0
    with torch.no_grad():
        out = generator(noisy)
        _, got = losses.generator_loss(out, clean, cfg, 0.0, None, lengths=torch.tensor([length, length]))
        kept = (length - 200) // 100 + 1
        clean_mag, clean_pha, clean_com = mpsenet.mag_pha_stft(clean)
        resynth = mpsenet.mag_pha_stft(out["wave"])[2]
        want = {
            "phase": sum(losses.phase_losses(clean_pha[..., :kept], out["pha"][..., :kept])),
            "mag": F.mse_loss(out["mag"][..., :kept], clean_mag[..., :kept]),
            "ri": F.mse_loss(out["com"][:, :, :kept], clean_com[:, :, :kept]) * 2,
            "consistency": F.mse_loss(out["com"][:, :, :kept], resynth[:, :, :kept]) * 2,
            "time": F.l1_loss(out["wave"][:, :length], clean[:, :length]),
        }
        _, unmasked = losses.generator_loss(out, clean, cfg, 0.0, None)
    for name, value in want.items():
        assert float(got[name]) == pytest.approx(float(value), rel=1e-5), name
        assert float(unmasked[name]) != pytest.approx(float(value), rel=1e-3), name  # the mask matters


def test_bsrnn_loss_has_no_extra_terms_unless_weighted():
    cfg = load_config("configs/smoke.yaml")
    torch.manual_seed(0)
    generator = build_generator(cfg)
    clean, noisy = _batch()
    out = generator(noisy)
    _, terms = losses.generator_loss(out, clean, cfg, 0.0, None)
    assert set(terms) == {"ri", "mag", "time", "gan"}
    cfg = load_config("configs/smoke.yaml", ["loss.w_phase=0.3", "loss.w_consistency=0.1"])
    total, terms = losses.generator_loss(out, clean, cfg, 0.0, None)
    assert set(terms) == {"ri", "mag", "time", "gan", "phase", "consistency"}
    total.backward()
    assert all(torch.isfinite(p.grad).all() for p in generator.parameters() if p.grad is not None)
