"""EnCodec front-end (Meta's ``encodec`` package): a PLUMBING test with randomly initialised weights.

The weights file is saved by ``write_random_encodec_weights`` from the package's own 24 kHz model,
i.e. in the layout of the official ``encodec_24khz-d7cc33bc.th`` (252 keys, weight-norm
``weight_g``/``weight_v`` pairs, codebooks under ``quantizer.vq.layers.<i>._codebook.embed``). This
checks loading, shapes, freezing and that gradients reach the masks through the frozen decoder; it
says nothing about audio quality, which needs the real pretrained file.
"""

from __future__ import annotations

import pytest
import torch

from trainer.core.config import ConfigError, load_config
from trainer.core.registry import build_generator
from trainer.tasks.creative.models.encodec import load_encodec, write_random_encodec_weights

SR = 24000


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("encodec") / "encodec_random.th"
    write_random_encodec_weights(path, seed=3)
    return path


def creative_config(weights, *extra):
    return load_config(None, ["task=creative_agent", "model.name=creative_agent", "data.demo=true",
                              f"data.sample_rate={SR}", "model.front_end=encodec",
                              f"model.encodec_weights={weights}", "model.dim=16", "model.num_heads=2",
                              "model.num_transformer_layers=1", "model.num_stages=2", *extra])


def test_random_weights_load_frozen_and_quantize_with_8_codebooks_at_6_kbps(weights_file):
    codec = load_encodec(weights_file, bandwidth_kbps=6.0)
    assert sum(p.numel() for p in codec.parameters()) > 14_000_000  # the full 24 kHz model
    assert not any(p.requires_grad for p in codec.parameters())
    wave = 0.1 * torch.randn(2, SR // 2 + 7)
    latent = codec.encode(wave)
    assert latent.shape == (2, 128, -(-wave.shape[1] // 320))  # 75 frames per second, last one partial
    # the latent is a sum of 8 codebook entries, chosen residual by residual (nearest first)
    raw = codec.model.encoder(wave.unsqueeze(1))
    residual, total = raw[0].t(), torch.zeros_like(raw[0].t())
    for layer in codec.model.quantizer.vq.layers[:8]:
        book = layer._codebook.embed
        chosen = book[torch.cdist(residual, book).argmin(-1)]
        total, residual = total + chosen, residual - chosen
    torch.testing.assert_close(latent[0].t(), total, rtol=1e-4, atol=1e-4)
    decoded = codec.decode(latent, wave.shape[1])
    assert decoded.shape == wave.shape and torch.isfinite(decoded).all()


def test_agent_with_encodec_front_end_trains_only_its_own_weights(weights_file):
    torch.manual_seed(0)
    model = build_generator(creative_config(weights_file))
    inputs, targets = 0.1 * torch.randn(2, SR // 4), 0.1 * torch.randn(2, SR // 4)
    out = model(inputs, targets)
    assert out["wave"].shape == inputs.shape
    assert out["mask_input"].shape == (2, 128, -(-inputs.shape[1] // 320))
    out["wave"].pow(2).mean().backward()
    codec_params = list(model.front_end.codec.parameters())
    assert codec_params and all(p.grad is None for p in codec_params)
    assert model.agent.mask_input.weight.grad is not None and model.agent.mask_input.weight.grad.abs().sum() > 0
    model.train()
    assert not model.front_end.codec.training  # frozen codec stays in inference mode


def test_without_the_package_the_error_names_it(weights_file, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "encodec", None)  # as if not installed
    with pytest.raises(ConfigError, match="pip install encodec"):
        load_encodec(weights_file)


def test_bad_weights_files_are_clear_errors(tmp_path, weights_file):
    with pytest.raises(ConfigError, match="does not exist.*stage"):
        load_encodec(tmp_path / "missing.th")
    junk = tmp_path / "junk.th"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(ConfigError, match="not a readable torch state dict"):
        load_encodec(junk)
    other = tmp_path / "other.th"
    torch.save({"layer.weight": torch.zeros(2)}, other)
    with pytest.raises(ConfigError, match="does not look like an EnCodec 24 kHz"):
        load_encodec(other)
    state = torch.load(weights_file, weights_only=True)
    del state["decoder.model.15.conv.conv.bias"]
    truncated = tmp_path / "truncated.th"
    torch.save(state, truncated)
    with pytest.raises(ConfigError, match="lacks decoder.model.15.conv.conv.bias"):
        load_encodec(truncated)
    with pytest.raises(ConfigError, match="5.0 kbps is not one of"):
        load_encodec(weights_file, bandwidth_kbps=5.0)
    with pytest.raises(ConfigError, match="sample_rate"):
        build_generator(creative_config(weights_file, "data.sample_rate=16000"))


def test_a_damaged_copy_of_an_officially_named_file_is_caught(tmp_path, weights_file):
    import hashlib

    data = weights_file.read_bytes()
    good = tmp_path / f"encodec_24khz-{hashlib.sha256(data).hexdigest()[:8]}.th"
    good.write_bytes(data)
    assert load_encodec(good).bandwidth_kbps == 6.0
    damaged = tmp_path / "encodec_24khz-d7cc33bc.th"  # the official name, other content
    damaged.write_bytes(data)
    with pytest.raises(ConfigError, match="damaged"):
        load_encodec(damaged)

