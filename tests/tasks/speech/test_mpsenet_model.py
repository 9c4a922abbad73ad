"""MP-SENet generator (trainer/tasks/speech/models/mpsenet.py): sizes, checkpoint layout, contract, STFT front-end.

Equality with the authors' code is shown by benchmarks/check_reference_equivalence.py. To stay
fast on two CPU cores, the published size runs one short forward; the behaviour tests use a
narrow network (16 channels, one TS block), which goes through the same code.
"""

import math

import pytest
import torch

from trainer.tasks.speech.models import mpsenet

SR = 16000
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def generator():
    """Published size (64 channels, 4 TS blocks)."""
    torch.manual_seed(0)
    return mpsenet.MPSENetGenerator().eval()


def _small(train=False):
    return mpsenet.MPSENetGenerator(dense_channel=16, num_tsblocks=1).train(train)


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    return _small()


def test_published_parameter_count():
    torch.manual_seed(0)
    net = mpsenet.MPSENetNet(dense_channel=64, num_tsblocks=4, beta=2.0, n_fft=400)
    assert sum(p.numel() for p in net.parameters()) == 2_263_372


def test_state_dict_matches_the_official_layout(golden_keys):
    state = mpsenet.MPSENetNet().state_dict()
    assert [(k, list(v.shape)) for k, v in state.items()] == golden_keys("mpsenet_keys.txt")


def test_wrapper_holds_only_the_network_under_the_net_prefix(generator):
    assert mpsenet.WRAPPER_PREFIX == "net."
    assert list(generator.state_dict()) == ["net." + k for k in generator.net.state_dict()]
    assert sum(p.numel() for p in generator.parameters()) == 2_263_372


@pytest.mark.parametrize("wrapped", [True, False])
def test_official_checkpoint_file_loads_strictly(tmp_path, wrapped):
    # Official files are {"generator": MPNet.state_dict()}; a bare state dict is accepted too.
    torch.manual_seed(1)
    source = mpsenet.MPSENetNet(dense_channel=16, num_tsblocks=1)  # same layout, smaller tensors
    payload = {"generator": source.state_dict()} if wrapped else source.state_dict()
    torch.save(payload, tmp_path / "g_best_vb")
    target = _small()
    mpsenet.load_official_state_dict(target, torch.load(tmp_path / "g_best_vb", weights_only=True), strict=True)
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()["net." + key], value)


def _check_contract(out, batch, length):
    frames = length // 100 + 1
    assert out["wave"].shape == (batch, length) and out["wave"].dtype == torch.float32
    assert torch.isfinite(out["wave"]).all()
    for key in ("mag", "amp", "pha"):
        assert out[key].shape == (batch, 201, frames) and out[key].dtype == torch.float32, key
    assert out["com"].shape == (batch, 201, frames, 2)
    assert out["spec"].shape == (batch, 201, frames) and out["spec"].dtype == torch.complex64
    assert torch.equal(torch.view_as_real(out["spec"]), out["com"])
    assert torch.equal(out["mag"], out["amp"])
    assert out["pha"].abs().max() <= math.pi + 1e-6
    assert (out["amp"] >= 0).all()


def test_published_size_contract_on_half_a_second_odd_length(generator):
    torch.manual_seed(2)
    with torch.no_grad():
        out = generator(torch.randn(1, SR // 2 + 37))
    _check_contract(out, 1, SR // 2 + 37)


@pytest.mark.parametrize("length", [4000, 4037, 3999])
def test_contract_shapes_dtypes_and_length(small, length):
    torch.manual_seed(2)
    with torch.no_grad():
        out = small(torch.randn(2, length))
    _check_contract(out, 2, length)


def test_wave_prefix_is_the_reference_length_istft(small):
    # The reference's iSTFT returns (T // 100) * 100 samples; ours asks torch.istft for T and
    # must agree on that prefix.
    torch.manual_seed(3)
    wave = torch.randn(1, 4037)
    with torch.no_grad():
        out = small(wave)
        ref_length = mpsenet.mag_pha_istft(out["amp"], out["pha"])
    assert ref_length.shape[-1] == 4000
    assert torch.allclose(out["wave"][:, :4000], ref_length, atol=1e-6)


def test_istft_to_the_input_length_reconstructs_the_tail():
    # The up to 99 samples past the reference's (T // 100) * 100 are real overlap-add output.
    torch.manual_seed(8)
    wave = torch.randn(2, 4037)
    mag, pha, _ = mpsenet.mag_pha_stft(wave)
    assert torch.allclose(mpsenet.mag_pha_istft(mag, pha, length=4037), wave, atol=1e-4)


def test_front_end_epsilons_and_round_trip():
    torch.manual_seed(4)
    wave = torch.randn(2, 8000)
    mag, pha, com = mpsenet.mag_pha_stft(wave)
    raw = torch.stft(wave, 400, 100, window=torch.hann_window(400), return_complex=True)
    assert torch.allclose(mag, torch.sqrt(raw.real**2 + raw.imag**2 + 1e-9) ** 0.3)
    assert torch.allclose(pha, torch.atan2(raw.imag + 1e-10, raw.real + 1e-5))
    assert torch.allclose(com, torch.stack((mag * torch.cos(pha), mag * torch.sin(pha)), -1))
    assert torch.allclose(mpsenet.mag_pha_istft(mag, pha), wave, atol=1e-4)
    # Silence stays finite (the epsilons).
    mag0, pha0, _ = mpsenet.mag_pha_stft(torch.zeros(1, 800))
    assert torch.isfinite(mag0).all() and torch.isfinite(pha0).all()


def test_batch_items_interact_like_the_reference():
    # Faithful quirk of the released code (sequence-first attention/GRU on (B*F, T, C)): an
    # item's output depends on the other items of its batch. If this test fails, the network
    # no longer computes what the official checkpoints were trained with.
    torch.manual_seed(5)
    net = _small()
    a, b = torch.randn(1, 2000), torch.randn(1, 2000)
    with torch.no_grad():
        alone = net(a)["amp"]
        batched = net(torch.cat([a, b]))["amp"][:1]
    assert not torch.allclose(alone, batched, atol=1e-4)


def test_gradients_reach_every_parameter():
    torch.manual_seed(6)
    net = _small(train=True)
    out = net(torch.randn(2, 2000))
    (out["wave"].abs().mean() + out["com"].square().mean() + out["pha"].mean()).backward()
    missing = [k for k, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert missing == []


def test_cpu_bf16_autocast_keeps_the_fp32_contract():
    torch.manual_seed(7)
    net = _small()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(torch.randn(1, 2000))
    assert out["wave"].dtype == torch.float32 and out["mag"].dtype == torch.float32
    assert out["spec"].dtype == torch.complex64
    assert torch.isfinite(out["wave"]).all()
