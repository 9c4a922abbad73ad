"""The model registry, the BSRNN generator and the MetricGAN discriminator (tiny sizes, CPU)."""

import numpy as np
import pytest
import torch

from trainer.audio import spectral
from trainer.core.config import ConfigError, load_config
from trainer.core.registry import build_generator, register_generator
from trainer.data.synth import SENTENCES, babble_like_noise, mix_at_snr, synthesize_speech
from trainer.tasks.speech import losses
from trainer.tasks.speech.models import build_discriminator
from trainer.tasks.speech.models.bsrnn import band_widths, default_band_widths

SMOKE = "configs/smoke.yaml"  # the tiny model: 16 channels, 1 layer, discriminator 4 channels


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Four 1 s items of real speech (clean, noisy at 0-5 dB SNR), 16 kHz."""
    clean, noisy = [], []
    for i, text in enumerate(SENTENCES[:4]):
        wave = synthesize_speech(text, 16000, seed=i)[:16000]
        wave = np.pad(wave, (0, 16000 - len(wave)))
        clean.append(wave)
        noisy.append(mix_at_snr(wave, babble_like_noise(16000, seed=i), snr_db=float(i) * 5 / 3))
    return torch.from_numpy(np.stack(clean)), torch.from_numpy(np.stack(noisy))


def tiny_config(*overrides):
    return load_config(SMOKE, list(overrides))


def test_registry_builds_bsrnn_and_names_the_valid_choices():
    cfg = tiny_config()
    assert type(build_generator(cfg)).__name__ == "BSRNN"
    cfg.model.name = "no_such_model"  # bypasses the config's choices on purpose
    with pytest.raises(ConfigError, match=r"model.name: 'no_such_model' .*valid names: .*bsrnn"):
        build_generator(cfg)


def test_each_tasks_generator_choices_are_exactly_its_registered_generators():
    from trainer.core.config import config_class
    from trainer.core.registry import generator_names, task_names

    for task in task_names():
        choices = config_class(task).__dataclass_fields__["model"].type.__dataclass_fields__["name"].metadata["choices"]
        assert sorted(choices) == generator_names(task), task


def test_register_generator_refuses_a_taken_name():
    with pytest.raises(ValueError, match="'bsrnn' is already registered"):
        register_generator("bsrnn")(lambda cfg: torch.nn.Identity())


def test_band_layouts_cover_every_bin_once():
    widths = default_band_widths(16000, 400)
    assert sum(widths) == 201 and len(widths) == 30 and min(widths) >= 2
    # 100 Hz bands (2.5 bins of 40 Hz) up to 1 kHz = bin 25, then 250 Hz, then 500 Hz
    assert sum(widths[:10]) == 25 and sum(widths[10:22]) == 100 - 25
    for sample_rate, n_fft in ((8000, 256), (16000, 512), (24000, 480), (48000, 960), (16000, 64)):
        widths = band_widths(0, sample_rate, n_fft)
        assert sum(widths) == n_fft // 2 + 1 and min(widths) >= 1
    assert band_widths(7, 16000, 400) == [29, 29, 29, 29, 29, 28, 28]
    with pytest.raises(ConfigError, match="model.num_bands: 300 exceeds the 201 frequency bins"):
        band_widths(300, 16000, 400)


def test_generator_shapes_for_lengths_off_the_hop(batch):
    torch.manual_seed(0)
    generator = build_generator(tiny_config("model.num_bands=12"))
    _, noisy = batch
    for length in (16000, 12345):
        out = generator(noisy[:2, :length])
        frames = length // 100 + 1
        assert out["wave"].shape == (2, length) and out["wave"].dtype == torch.float32
        assert out["spec"].shape == (2, 201, frames) and out["spec"].dtype == torch.complex64
        assert out["mag"].shape == (2, 201, frames)
        assert torch.allclose(out["mag"], out["spec"].abs())


def test_untrained_generator_returns_its_input(batch):
    torch.manual_seed(0)
    _, noisy = batch
    out = build_generator(tiny_config())(noisy)
    assert torch.allclose(out["wave"], noisy, atol=1e-5)


def test_every_generator_and_discriminator_parameter_gets_a_gradient(batch):
    # DDP (find_unused_parameters=False) needs every parameter in every backward.
    torch.manual_seed(0)
    cfg = tiny_config()
    generator, disc = build_generator(cfg), build_discriminator(cfg)
    clean, noisy = batch
    out = generator(noisy[:2, :8000])
    total, _ = losses.generator_loss(out, clean[:2, :8000], cfg, 0.3, disc)
    total.backward()
    for name, param in [*generator.named_parameters(), *disc.named_parameters()]:
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name


def test_same_seed_same_model_same_outputs(batch):
    clean, noisy = batch[0][:2, :8000], batch[1][:2, :8000]
    cfg = tiny_config()

    def one_step_then_forward(seed: int) -> torch.Tensor:
        torch.manual_seed(seed)
        generator = build_generator(cfg)  # an untrained one returns its input: train one step
        optimizer = torch.optim.Adam(generator.parameters(), lr=1e-3)
        losses.generator_loss(generator(noisy), clean, cfg, 0.0, None)[0].backward()
        optimizer.step()
        return generator(noisy)["wave"]

    first = one_step_then_forward(123)
    assert torch.equal(first, one_step_then_forward(123))
    assert not torch.equal(first, one_step_then_forward(124))


def test_generator_under_cpu_bf16_autocast_returns_fp32(batch):
    torch.manual_seed(0)
    generator = build_generator(tiny_config())
    _, noisy = batch
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        out = generator(noisy[:1, :8000])
    assert out["wave"].dtype == torch.float32 and out["spec"].dtype == torch.complex64
    assert torch.isfinite(out["wave"]).all()


def test_tiny_generator_overfits_one_batch(batch):
    torch.manual_seed(0)
    cfg = tiny_config()
    generator = build_generator(cfg)
    optimizer = torch.optim.Adam(generator.parameters(), lr=1e-2)
    clean, noisy = batch[0][:2, 4000:12000], batch[1][:2, 4000:12000]  # 2 x 0.5 s keeps it fast
    history = []
    for _ in range(12):
        total, _ = losses.generator_loss(generator(noisy), clean, cfg, 0.0, None)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        history.append(total.item())
    assert history[-1] < 0.6 * history[0], history


def test_discriminator_output_range_and_shape_checks(batch):
    torch.manual_seed(0)
    cfg = tiny_config("discriminator.sigmoid_beta=1.2")
    disc = build_discriminator(cfg).eval()
    clean, noisy = batch
    stft_cfg = cfg.stft
    clean_mag = spectral.compressed_magnitude(spectral.stft(clean, stft_cfg), stft_cfg.compress_factor, stft_cfg.eps)
    noisy_mag = spectral.compressed_magnitude(spectral.stft(noisy, stft_cfg), stft_cfg.compress_factor, stft_cfg.eps)
    scores = disc(clean_mag, noisy_mag)
    assert scores.shape == (4,)
    assert ((scores > 0) & (scores < 1.2)).all()
    assert torch.equal(scores, disc(clean_mag, noisy_mag))  # eval: no dropout, no power iteration
    # spectral norm on every conv and linear layer: their weights are parametrised
    assert sum(hasattr(m, "parametrizations") for m in disc.modules()) == 6
    with pytest.raises(ValueError, match="one shape"):
        disc(clean_mag, noisy_mag[:, :, :-1])
