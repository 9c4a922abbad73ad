"""Generator and discriminator losses, and the GAN schedule of the two presets."""

import numpy as np
import pytest
import torch

from trainer.audio import spectral
from trainer.core.config import load_config
from trainer.core.schedules import ramp_start_epoch, ramp_weight
from trainer.data.synth import SENTENCES, babble_like_noise, mix_at_snr, synthesize_speech
from trainer.tasks.speech.losses import discriminator_loss, generator_loss
from trainer.tasks.speech.models import build_discriminator


@pytest.fixture(scope="module")
def cfg():
    return load_config("configs/smoke.yaml")


@pytest.fixture(scope="module")
def waves() -> tuple[torch.Tensor, torch.Tensor]:
    """Three 0.5 s items of real speech: clean and noisy (0 dB)."""
    clean = np.stack([synthesize_speech(text, 16000, seed=i)[4000:12000] for i, text in enumerate(SENTENCES[:3])])
    noisy = np.stack([mix_at_snr(c, babble_like_noise(8000, seed=i), 0.0) for i, c in enumerate(clean)])
    return torch.from_numpy(clean), torch.from_numpy(noisy)


def perfect_output(clean: torch.Tensor, cfg) -> dict:
    spec = spectral.compress(spectral.stft(clean, cfg.stft), cfg.stft.compress_factor, cfg.stft.eps)
    return {"wave": clean.clone(), "spec": spec, "mag": spec.abs()}


def magnitudes(cfg, *waves):
    s = cfg.stft
    return [spectral.compressed_magnitude(spectral.stft(w, s), s.compress_factor, s.eps) for w in waves]


def test_perfect_estimate_gives_zero_terms(waves, cfg):
    clean, _ = waves
    total, terms = generator_loss(perfect_output(clean, cfg), clean, cfg, 0.0, None)
    assert set(terms) == {"ri", "mag", "time", "gan"}
    assert all(float(v) == 0.0 for v in terms.values()) and float(total) == 0.0


def test_total_is_the_weighted_sum_and_gan_pulls_d_to_one(waves, cfg):
    torch.manual_seed(0)
    clean, noisy = waves
    disc = build_discriminator(cfg).eval()
    out = perfect_output(noisy, cfg)  # "estimate" = the noisy input
    total, terms = generator_loss(out, clean, cfg, 0.3, disc)
    w = cfg.loss
    assert all(float(terms[k]) > 0 for k in ("ri", "mag", "time", "gan"))
    expected = w.w_ri * terms["ri"] + w.w_mag * terms["mag"] + w.w_time * terms["time"] + 0.3 * terms["gan"]
    assert torch.allclose(total, expected)
    clean_mag, noisy_mag = magnitudes(cfg, clean, noisy)
    assert torch.allclose(terms["gan"], ((disc(clean_mag, noisy_mag) - 1) ** 2).mean(), rtol=1e-5)
    assert torch.allclose(terms["time"], (noisy - clean).abs().mean())
    # without a discriminator (or with weight 0) the GAN term is a zero tensor
    assert float(generator_loss(out, clean, cfg, 0.3, None)[1]["gan"]) == 0.0
    assert float(generator_loss(out, clean, cfg, 0.0, disc)[1]["gan"]) == 0.0


def test_lengths_exclude_the_zero_padding(waves, cfg):
    clean, noisy = waves
    lengths = torch.tensor([8000, 5000, 3050])
    padded = clean.clone()
    for i, length in enumerate(lengths):
        padded[i, length:] = 0.0
    out = perfect_output(padded, cfg)
    # garbage in the padding, in the waveform and in every frame that starts after the end
    garbage = perfect_output(noisy, cfg)
    for i, length in enumerate(lengths.tolist()):
        out["wave"][i, length:] = garbage["wave"][i, length:]
        first_padded_frame = -(-length // cfg.stft.hop_length)
        out["spec"][i, :, first_padded_frame:] = garbage["spec"][i, :, first_padded_frame:]
    out["mag"] = out["spec"].abs()
    _, masked = generator_loss(out, padded, cfg, 0.0, None, lengths=lengths)
    assert all(float(v) == 0.0 for v in masked.values())
    _, unmasked = generator_loss(out, padded, cfg, 0.0, None)
    assert all(float(unmasked[k]) > 0.0 for k in ("ri", "mag", "time"))


def test_a_zero_padded_item_has_the_loss_of_the_same_item_unpadded(waves, cfg):
    clean, noisy = waves
    length, padded_length = 5000, 8000
    estimate = noisy[:1, :length] * 0.5 + clean[:1, :length] * 0.5
    unpadded = generator_loss(perfect_output(estimate, cfg), clean[:1, :length], cfg, 0.0, None,
                              lengths=torch.tensor([length]))
    pad = torch.nn.functional.pad
    padded = generator_loss(perfect_output(pad(estimate, (0, padded_length - length)), cfg),
                            pad(clean[:1, :length], (0, padded_length - length)), cfg, 0.0, None,
                            lengths=torch.tensor([length]))
    assert torch.allclose(padded[0], unpadded[0], rtol=1e-6) and float(unpadded[0]) > 0
    for key in ("ri", "mag", "time"):
        assert torch.allclose(padded[1][key], unpadded[1][key], rtol=1e-6), key
    unmasked = generator_loss(perfect_output(pad(estimate, (0, padded_length - length)), cfg),
                              pad(clean[:1, :length], (0, padded_length - length)), cfg, 0.0, None)
    assert not torch.allclose(unmasked[0], unpadded[0], rtol=1e-3)  # without lengths the padding counts


def test_discriminator_loss_masks_failed_items(waves, cfg):
    torch.manual_seed(0)
    clean, noisy = waves
    disc = build_discriminator(cfg).eval()
    clean_mag, noisy_mag = magnitudes(cfg, clean, noisy)
    target = torch.tensor([0.4, float("nan"), 0.7])  # the middle item's PESQ failed
    valid = torch.tensor([True, False, True])
    loss, info = discriminator_loss(disc, clean_mag, noisy_mag, target, valid)
    d_clean, d_est = disc(clean_mag, clean_mag), disc(clean_mag, noisy_mag)
    expected = ((d_clean - 1) ** 2).mean() + ((d_est[[0, 2]] - target[[0, 2]]) ** 2).mean()
    assert torch.isfinite(loss) and torch.allclose(loss, expected, rtol=1e-5)
    assert int(info["num_valid"]) == 2 and int(info["num_items"]) == 3
    assert torch.allclose(info["d_clean"], d_clean.mean()) and torch.allclose(info["d_estimate"], d_est.mean())


def test_all_items_invalid_still_reaches_every_discriminator_parameter(waves, cfg):
    # DDP: a rank whose PESQ items all failed must run the same backward (same all-reduces).
    torch.manual_seed(0)
    clean, noisy = waves
    disc = build_discriminator(cfg).train()
    clean_mag, noisy_mag = magnitudes(cfg, clean, noisy)
    target = torch.full((3,), float("nan"))
    loss, info = discriminator_loss(disc, clean_mag, noisy_mag, target, torch.zeros(3, dtype=torch.bool))
    assert int(info["num_valid"]) == 0 and float(info["estimate_loss"]) == 0.0
    loss.backward()
    assert torch.isfinite(loss)
    for name, param in disc.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name


def test_discriminator_loss_rejects_mismatched_labels(waves, cfg):
    clean, _ = waves
    (clean_mag,) = magnitudes(cfg, clean)
    with pytest.raises(ValueError, match=r"must both be \(3,\)"):
        discriminator_loss(build_discriminator(cfg), clean_mag, clean_mag, torch.zeros(2), torch.ones(2, dtype=bool))


def gan_start_epoch(epochs, loss_cfg):
    return ramp_start_epoch(epochs, loss_cfg.gan_start_fraction)


def gan_weight(epoch, epochs, loss_cfg):
    return ramp_weight(epoch, epochs, loss_cfg.w_gan, loss_cfg.gan_start_fraction, loss_cfg.gan_ramp_epochs)


def test_gan_schedule_se_cmgan_full_weight_from_the_start():
    loss_cfg = load_config("configs/se_cmgan.yaml").loss
    epochs = load_config("configs/se_cmgan.yaml").train.epochs
    assert gan_start_epoch(epochs, loss_cfg) == 0
    assert [gan_weight(e, epochs, loss_cfg) for e in (0, 1, 50, epochs - 1)] == [0.05] * 4


def test_gan_schedule_se_balanced_enters_at_60_percent_and_ramps_over_20_epochs():
    cfg = load_config("configs/se_balanced.yaml")
    epochs, loss_cfg = cfg.train.epochs, cfg.loss
    assert epochs == 250 and gan_start_epoch(epochs, loss_cfg) == 150
    weights = {e: gan_weight(e, epochs, loss_cfg) for e in (0, 149, 150, 151, 159, 168, 169, 170, 249)}
    assert weights[0] == weights[149] == 0.0
    assert weights[150] == pytest.approx(0.30 / 20)
    assert weights[151] == pytest.approx(0.30 * 2 / 20)
    assert weights[159] == pytest.approx(0.15)
    assert weights[168] == pytest.approx(0.30 * 19 / 20)
    assert weights[169] == weights[170] == weights[249] == pytest.approx(0.30)
    ramp = [gan_weight(e, epochs, loss_cfg) for e in range(150, 170)]
    assert all(b > a for a, b in zip(ramp, ramp[1:], strict=False))
    # Extending the run to 300 epochs recomputes the entry point: 60 % of 300 = 180.
    assert gan_weight(179, 300, loss_cfg) == 0.0 and gan_weight(180, 300, loss_cfg) == pytest.approx(0.015)
