"""CMGAN generator (trainer/tasks/speech/models/cmgan.py): sizes, checkpoint layout, contract, STFT front-end.

Equality with the authors' code is shown by benchmarks/check_reference_equivalence.py (it
needs a checkout of the reference); these tests need nothing but torch. To stay fast on two
CPU cores, the published size runs one short forward; the behaviour tests use a narrow
network (16 channels), which goes through the same code.
"""

import math

import pytest
import torch

from trainer.tasks.speech.models import cmgan

SR = 16000
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def generator():
    """Published size (64 channels)."""
    torch.manual_seed(0)
    return cmgan.CMGANGenerator().eval()


@pytest.fixture(scope="module")
def small():
    """Narrow (16 channels), same code paths: for the behaviour tests."""
    torch.manual_seed(0)
    return cmgan.CMGANGenerator(num_channel=16).eval()


def test_published_parameter_count():
    torch.manual_seed(0)
    assert sum(p.numel() for p in cmgan.CMGANNet(num_channel=64, num_features=201).parameters()) == 1_834_833


def test_state_dict_matches_the_official_layout(golden_keys):
    state = cmgan.CMGANNet().state_dict()
    assert [(k, list(v.shape)) for k, v in state.items()] == golden_keys("cmgan_keys.txt")


def test_wrapper_holds_only_the_network_under_the_net_prefix(generator):
    net_keys = list(generator.net.state_dict())
    assert cmgan.WRAPPER_PREFIX == "net."
    assert list(generator.state_dict()) == ["net." + k for k in net_keys]
    assert sum(p.numel() for p in generator.parameters()) == 1_834_833


def test_official_checkpoint_file_loads_strictly(tmp_path):
    # An official checkpoint is a plain TSCNet state dict saved with torch.save.
    torch.manual_seed(1)
    source = cmgan.CMGANNet(num_channel=16)  # same layout as the published size, smaller tensors
    torch.save(source.state_dict(), tmp_path / "ckpt")
    target = cmgan.CMGANGenerator(num_channel=16)
    cmgan.load_official_state_dict(target, torch.load(tmp_path / "ckpt", weights_only=True), strict=True)
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()["net." + key], value)


def _check_contract(out, batch, length):
    frames = math.ceil(length / 100) + 1
    assert out["wave"].shape == (batch, length) and out["wave"].dtype == torch.float32
    assert torch.isfinite(out["wave"]).all()
    assert out["spec"].shape == (batch, 201, frames) and out["spec"].dtype == torch.complex64
    assert out["mag"].shape == (batch, 201, frames) and out["mag"].dtype == torch.float32
    assert torch.allclose(out["mag"], out["spec"].abs())


def test_published_size_contract_on_half_a_second_odd_length(generator):
    torch.manual_seed(2)
    with torch.no_grad():
        out = generator(torch.randn(1, SR // 2 + 37))
    _check_contract(out, 1, SR // 2 + 37)


@pytest.mark.parametrize("length", [4000, 4037, 3901])
def test_contract_shapes_dtypes_and_length(small, length):
    torch.manual_seed(2)
    wave = torch.randn(2, length)
    with torch.no_grad():
        out = small(wave)
    _check_contract(out, 2, length)
    assert small.analyze(wave).shape == out["spec"].shape


def test_network_interface(small):
    torch.manual_seed(3)
    with torch.no_grad():
        real, imag = small.net(torch.randn(1, 2, 21, 201))
    assert real.shape == imag.shape == (1, 1, 21, 201)


def test_compression_matches_power_law_and_inverts():
    torch.manual_seed(4)
    wave = torch.randn(2, 8000)
    spec = cmgan.compressed_spectrum(wave)
    raw = torch.stft(wave, 400, 100, window=torch.hamming_window(400), return_complex=True)
    assert torch.allclose(spec.abs(), raw.abs() ** 0.3, atol=1e-5)
    # Phase kept wherever it is defined.
    big = raw.abs() > 1e-3
    assert torch.allclose(torch.exp(1j * spec.angle())[big], torch.exp(1j * raw.angle())[big], atol=1e-4)
    assert torch.allclose(cmgan.uncompress_to_wave(spec), wave, atol=1e-4)


def test_silence_is_finite_with_finite_gradients():
    torch.manual_seed(5)
    net = cmgan.CMGANGenerator(num_channel=16).eval()
    out = net(torch.zeros(1, 2000))
    assert torch.isfinite(out["wave"]).all() and torch.isfinite(out["spec"]).all()
    out["wave"].sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


def test_odd_length_pads_with_the_signal_start_like_the_reference(small):
    torch.manual_seed(6)
    wave = torch.randn(1, 4037)
    padded = torch.cat([wave, wave[:, :63]], dim=-1)
    assert torch.equal(small.analyze(wave), cmgan.compressed_spectrum(padded))
    with torch.no_grad():
        assert torch.allclose(small(wave)["wave"], small(padded)["wave"][:, :4037], atol=1e-6)


def test_gradients_reach_every_parameter():
    torch.manual_seed(7)
    net = cmgan.CMGANGenerator(num_channel=16).train()
    out = net(torch.randn(2, 2000))
    (out["wave"].abs().mean() + out["mag"].mean()).backward()
    missing = [k for k, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert missing == []


def test_cpu_bf16_autocast_keeps_the_fp32_contract():
    torch.manual_seed(8)
    net = cmgan.CMGANGenerator(num_channel=16).eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(torch.randn(1, 2000))
    assert out["wave"].dtype == torch.float32 and out["mag"].dtype == torch.float32
    assert out["spec"].dtype == torch.complex64
    assert torch.isfinite(out["wave"]).all()
