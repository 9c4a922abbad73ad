"""MP-SENet loss terms (trainer_new.mpsenet_losses): invariances and closed-form values."""

import math

import pytest
import torch

from trainer_new import mpsenet
from trainer_new import mpsenet_losses as L

TWO_PI = 2 * math.pi


def _phases(seed=0, shape=(2, 201, 30)):
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1) * math.pi


def test_published_weights():
    # MP-SENet train.py line 181:
    # loss_mag * 0.9 + loss_pha * 0.3 + loss_com * 0.1 + loss_stft * 0.1 + loss_metric * 0.05 + loss_time * 0.2
    assert L.GENERATOR_LOSS_WEIGHTS == {"magnitude": 0.9, "phase": 0.3, "complex": 0.1, "consistency": 0.1,
                                        "metric": 0.05, "time": 0.2}


def test_phase_losses_vanish_for_identical_phases():
    p = _phases()
    for value in (*L.phase_losses(p, p), L.phase_loss(p, p)):
        assert value.dim() == 0 and float(value) == 0.0


def test_phase_losses_are_invariant_to_2pi_wraps():
    ref, est = _phases(1), _phases(2)
    gen = torch.Generator().manual_seed(3)
    wraps = torch.randint(-3, 4, ref.shape, generator=gen).double() * TWO_PI
    # identical up to wraps -> 0
    for value in L.phase_losses(ref, ref + wraps):
        assert float(value) < 1e-12
    # and wrapping either argument does not change the value
    for a, b in zip(L.phase_losses(ref, est), L.phase_losses(ref + wraps, est - wraps), strict=True):
        assert float(a) == pytest.approx(float(b), abs=1e-12)


def test_anti_wrapping_range_and_values():
    x = torch.linspace(-20, 20, 4001, dtype=torch.float64)
    y = L.anti_wrapping(x)
    assert float(y.min()) >= 0 and float(y.max()) <= math.pi + 1e-12
    assert float(L.anti_wrapping(torch.tensor(0.5))) == pytest.approx(0.5)
    assert float(L.anti_wrapping(torch.tensor(TWO_PI - 0.5))) == pytest.approx(0.5, abs=1e-6)


def test_group_delay_and_iaf_use_frequency_and_time_axes():
    # A phase that is linear in time only: no group-delay error against zero phase drift in
    # frequency, but an IAF error equal to the per-frame step.
    frames = torch.arange(30, dtype=torch.float64)
    est = (0.3 * frames).expand(2, 201, 30)
    ref = torch.zeros_like(est)
    assert float(L.group_delay_loss(ref, est)) == pytest.approx(0.0, abs=1e-12)
    assert float(L.instantaneous_angular_frequency_loss(ref, est)) == pytest.approx(0.3)


def test_consistency_loss_is_zero_for_a_consistent_spectrogram():
    torch.manual_seed(0)
    wave = torch.randn(2, 8000)
    mag, pha, com = mpsenet.mag_pha_stft(wave)
    resynth = mpsenet.mag_pha_stft(mpsenet.mag_pha_istft(mag, pha))[2]
    consistent = L.consistency_loss(com, resynth)
    # An inconsistent spectrogram (random phases) is far from its own re-analysis.
    rnd_pha = (torch.rand_like(pha) * 2 - 1) * math.pi
    rnd_com = torch.stack((mag * torch.cos(rnd_pha), mag * torch.sin(rnd_pha)), -1)
    inconsistent = L.consistency_loss(rnd_com, mpsenet.mag_pha_stft(mpsenet.mag_pha_istft(mag, rnd_pha))[2])
    assert consistent.dim() == 0
    assert float(consistent) < 1e-8 * float(com.square().mean())
    assert float(inconsistent) > 0.1 * float(com.square().mean())


def test_complex_loss_accepts_complex_or_stacked_layout():
    gen = torch.Generator().manual_seed(4)
    a, b = torch.randn(2, 201, 10, 2, generator=gen), torch.randn(2, 201, 10, 2, generator=gen)
    expected = torch.nn.functional.mse_loss(a, b) * 2
    assert torch.allclose(L.complex_loss(a, b), expected)
    assert torch.allclose(L.complex_loss(torch.view_as_complex(a), torch.view_as_complex(b)), expected)
    assert torch.allclose(L.consistency_loss(a, torch.view_as_complex(b)), expected)


def test_magnitude_and_time_losses():
    a, b = torch.ones(2, 201, 10), torch.zeros(2, 201, 10)
    assert float(L.magnitude_loss(a, b)) == 1.0
    assert float(L.time_loss(torch.full((2, 100), 0.5), torch.zeros(2, 100))) == 0.5


def test_metric_losses():
    ones = torch.ones(4, 1)
    assert float(L.metric_generator_loss(ones)) == 0.0
    assert float(L.metric_generator_loss(torch.zeros(4, 1))) == 1.0
    target = L.normalize_pesq([1.0, 4.5, 2.75, 1.0])
    assert torch.allclose(target, torch.tensor([0.0, 1.0, 0.5, 0.0]))
    assert L.normalize_pesq([3.0, -1]) is None
    d_real, d_fake = torch.full((4, 1), 0.5), torch.full((4, 1), 0.25)
    assert float(L.metric_discriminator_loss(d_real, d_fake, None)) == pytest.approx(0.25)
    assert float(L.metric_discriminator_loss(d_real, d_fake, torch.full((4,), 0.75))) == pytest.approx(0.5)


def test_generator_loss_combines_with_the_published_weights():
    terms = {name: torch.tensor(1.0) for name in L.GENERATOR_LOSS_WEIGHTS}
    assert float(L.generator_loss(terms)) == pytest.approx(0.9 + 0.3 + 0.1 + 0.1 + 0.05 + 0.2)
    assert float(L.generator_loss({"phase": torch.tensor(2.0)})) == pytest.approx(0.6)
    with pytest.raises(KeyError):
        L.generator_loss({"magnitud": torch.tensor(1.0)})
