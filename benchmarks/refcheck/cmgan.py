"""CMGAN (``trainer/tasks/speech/models/cmgan.py`` and the speech losses with ``configs/cmgan.yaml``)
against the authors' code (ruizhecao96/CMGAN ``src/``): network, pipelines, training-step tensors,
discriminator and losses. Run by ``benchmarks/check_reference_equivalence.py``."""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.refcheck.common import (
    EXPECTED_PARAMS,
    NET_TOL,
    SAMPLE_RATE,
    WAVE_TOL,
    Report,
    compare_state_dicts,
    gradient_checks,
    max_abs,
    metric_discriminator_state,
    num_params,
    perturb_,
    rel_diff,
    speech_like,
)
from trainer.core.config import load_config
from trainer.tasks.speech import losses
from trainer.tasks.speech.models import MetricDiscriminator
from trainer.tasks.speech.models import cmgan as our_cmgan

__all__ = ["check_cmgan", "perturbed_reference_cmgan"]


def perturbed_reference_cmgan(ref, seed: int) -> torch.nn.Module:
    """The reference ``TSCNet(64, 201)`` with every floating state entry perturbed (seeded)."""
    torch.manual_seed(seed)
    net = ref.TSCNet(num_channel=64, num_features=201)
    perturb_(net, seed + 1)
    return net.eval()


def cmgan_reference_enhance(ref, model, noisy: torch.Tensor, cut_len: int = 16000 * 16) -> torch.Tensor:
    """CMGAN ``evaluation.enhance_one_track`` on an in-memory (1, T) wave (CPU, torch 2)."""
    n_fft, hop = 400, 100
    c = torch.sqrt(noisy.size(-1) / torch.sum(noisy**2.0, dim=-1))
    noisy = torch.transpose(torch.transpose(noisy, 0, 1) * c, 0, 1)
    length = noisy.size(-1)
    padded_len = int(np.ceil(length / 100)) * 100
    noisy = torch.cat([noisy, noisy[:, :padded_len - length]], dim=-1)
    if padded_len > cut_len:
        batch_size = int(np.ceil(padded_len / cut_len))
        while 100 % batch_size != 0:
            batch_size += 1
        noisy = torch.reshape(noisy, (batch_size, -1))
    window = torch.hamming_window(n_fft)
    spec = torch.view_as_real(torch.stft(noisy, n_fft, hop, window=window, onesided=True, return_complex=True))
    spec = ref.power_compress(spec).permute(0, 1, 3, 2)
    est_real, est_imag = model(spec)
    est_real, est_imag = est_real.permute(0, 1, 3, 2), est_imag.permute(0, 1, 3, 2)
    est = ref.power_uncompress(est_real, est_imag).squeeze(1)
    audio = torch.istft(torch.view_as_complex(est.contiguous()), n_fft, hop, window=window, onesided=True)
    return torch.flatten(audio / c)[:length]


def cmgan_reference_train_forward(ref, model, noisy: torch.Tensor) -> dict:
    """CMGAN ``train.py`` ``forward_generator_step`` (generator side) on a (B, T) batch."""
    n_fft, hop = 400, 100
    window = torch.hamming_window(n_fft)
    spec = torch.view_as_real(torch.stft(noisy, n_fft, hop, window=window, onesided=True, return_complex=True))
    spec = ref.power_compress(spec).permute(0, 1, 3, 2)
    est_real, est_imag = model(spec)
    est_real, est_imag = est_real.permute(0, 1, 3, 2), est_imag.permute(0, 1, 3, 2)
    est_mag = torch.sqrt(est_real**2 + est_imag**2)
    est = ref.power_uncompress(est_real, est_imag).squeeze(1)
    audio = torch.istft(torch.view_as_complex(est.contiguous()), n_fft, hop, window=window, onesided=True)
    return {"real": est_real[:, 0], "imag": est_imag[:, 0], "mag": est_mag[:, 0], "audio": audio}


def check_cmgan(report: Report, ref, seed: int) -> None:
    print("CMGAN")
    ref_net, ours, wrapper = build_cmgan_networks(report, ref, seed)
    check_cmgan_networks(report, ref_net, ours, wrapper, seed)
    with torch.no_grad():
        check_cmgan_pipelines(report, ref, ref_net, wrapper, seed)
        ref_step, batch = check_cmgan_train_step(report, ref, ref_net, wrapper, seed)
    check_cmgan_losses(report, ref, ref_step, batch, seed)


def build_cmgan_networks(report: Report, ref, seed: int) -> tuple:
    """The perturbed reference ``TSCNet``, our network and our generator wrapper with its weights,
    after checking parameter counts and state-dict keys."""
    torch.manual_seed(seed)
    report.equal("cmgan: reference parameters (default init) == 1,834,833",
                 num_params(ref.TSCNet(num_channel=64, num_features=201)), EXPECTED_PARAMS["cmgan"])
    ref_net = perturbed_reference_cmgan(ref, seed)
    ours = our_cmgan.CMGANNet(num_channel=64, num_features=201)
    ours.load_state_dict(ref_net.state_dict(), strict=True)
    wrapper = our_cmgan.CMGANGenerator()
    our_cmgan.load_official_state_dict(wrapper, ref_net.state_dict(), strict=True)
    report.equal("cmgan: our parameters", num_params(ours), num_params(ref_net))
    report.equal("cmgan: wrapper parameters == network parameters", num_params(wrapper), num_params(ref_net))
    compare_state_dicts(report, "cmgan", ours, ref_net)
    report.equal("cmgan: wrapper keys == 'net.' + reference keys", list(wrapper.state_dict()),
                 [our_cmgan.WRAPPER_PREFIX + k for k in ref_net.state_dict()])
    return ref_net, ours, wrapper


def check_cmgan_networks(report: Report, ref_net, ours, wrapper, seed: int) -> None:
    """(a) networks on spectra: eval mode, float64, gradients, train mode."""
    ref_net.eval(), ours.eval(), wrapper.eval()
    gen = torch.Generator().manual_seed(seed + 2)
    x = torch.randn(2, 2, 64, 201, generator=gen)
    with torch.no_grad():
        ref_out, our_out = ref_net(x), ours(x)
    report.check("cmgan net (eval): real", max_abs(our_out[0], ref_out[0]), NET_TOL)
    report.check("cmgan net (eval): imag", max_abs(our_out[1], ref_out[1]), NET_TOL)
    ref64_net, ours64_net = copy.deepcopy(ref_net).double(), copy.deepcopy(ours).double()
    with torch.no_grad():
        ref64, ours64 = ref64_net(x.double()), ours64_net(x.double())
    report.check("cmgan net (eval, float64): real, imag",
                 max(max_abs(ours64[0], ref64[0]), max_abs(ours64[1], ref64[1])), NET_TOL)
    gradient_checks(report, "cmgan net (eval)", ref_net, ours, lambda net, inp: net(inp), (x,), seed)

    # train mode: batch statistics in BatchNorm, dropout 0.2 with the same RNG stream
    ref_train, our_train = copy.deepcopy(ref_net).train(), copy.deepcopy(ours).train()
    torch.manual_seed(seed + 3)
    ref_out = ref_train(x)
    torch.manual_seed(seed + 3)
    our_out = our_train(x)
    report.check("cmgan net (train, same RNG): real", max_abs(our_out[0], ref_out[0]), NET_TOL)
    report.check("cmgan net (train, same RNG): imag", max_abs(our_out[1], ref_out[1]), NET_TOL)


def check_cmgan_pipelines(report: Report, ref, ref_net, wrapper, seed: int) -> None:
    """(b) wave -> wave: enhance_one_track on a 2 s speech-like signal, and at an odd length."""
    for label, n in (("2 s speech-like", 2 * SAMPLE_RATE), ("odd length 32037", 2 * SAMPLE_RATE + 37)):
        noisy = speech_like(n, seed + 4)[None]
        ref_wave = cmgan_reference_enhance(ref, ref_net, noisy)
        c = torch.sqrt(n / torch.sum(noisy**2, dim=-1, keepdim=True))   # caller's normalisation
        out = wrapper(noisy * c)
        our_wave = out["wave"] / c
        report.equal(f"cmgan pipeline ({label}): output length", our_wave.shape[-1], ref_wave.shape[-1])
        report.check(f"cmgan pipeline ({label}): wave", max_abs(our_wave[0], ref_wave), WAVE_TOL)
        report.info(f"cmgan pipeline ({label}): reference wave peak", f"{float(ref_wave.abs().max()):.4f}")


def check_cmgan_train_step(report: Report, ref, ref_net, wrapper, seed: int) -> tuple[dict, torch.Tensor]:
    """A training-style batch (B = 2, 1 s, unit-RMS scaled as train.py does) and the analysis front-end
    alone; returns the reference's step tensors and the batch, for the loss checks."""
    batch = torch.stack([speech_like(SAMPLE_RATE, seed + 5), speech_like(SAMPLE_RATE, seed + 6, snr_db=0.0)])
    c = torch.sqrt(batch.size(-1) / torch.sum(batch**2.0, dim=-1))
    batch = torch.transpose(torch.transpose(batch, 0, 1) * c, 0, 1)
    ref_step = cmgan_reference_train_forward(ref, ref_net, batch)
    out = wrapper(batch)
    report.check("cmgan train step (B=2): est_real", max_abs(out["spec"].real, ref_step["real"]), NET_TOL)
    report.check("cmgan train step (B=2): est_imag", max_abs(out["spec"].imag, ref_step["imag"]), NET_TOL)
    report.check("cmgan train step (B=2): est_mag", max_abs(out["mag"], ref_step["mag"]), NET_TOL)
    report.check("cmgan train step (B=2): est_audio", max_abs(out["wave"], ref_step["audio"]), WAVE_TOL)

    ref_spec = ref.power_compress(torch.view_as_real(torch.stft(
        batch, 400, 100, window=torch.hamming_window(400), onesided=True, return_complex=True)))
    ours_spec = our_cmgan.compressed_spectrum(batch)
    report.check("cmgan power_compress(stft): real/imag", max(max_abs(ours_spec.real, ref_spec[:, 0]),
                                                              max_abs(ours_spec.imag, ref_spec[:, 1])), NET_TOL)
    return ref_step, batch


def check_cmgan_losses(report: Report, ref, ref_step: dict, noisy_batch: torch.Tensor, seed: int) -> None:
    """Our discriminator with the reference's weights, and the speech task's losses with
    configs/cmgan.yaml on the reference's training-step tensors (train.py lines 124-174)."""
    torch.manual_seed(seed + 8)
    ref_disc = ref.Discriminator(ndf=16)
    perturb_(ref_disc, seed + 9, scale=0.02)
    ref_disc.eval()
    ours = MetricDiscriminator(num_channels=16).eval()
    ours.load_state_dict(metric_discriminator_state(ref_disc.state_dict()), strict=True)

    cfg = load_config("configs/cmgan.yaml")
    # The targets: a near-clean speech-like batch of the same length as the reference step's input.
    clean = torch.stack([speech_like(noisy_batch.shape[-1], seed + s, snr_db=60.0) for s in (10, 11)])
    spec = torch.view_as_real(torch.stft(clean, 400, 100, window=torch.hamming_window(400), onesided=True,
                                         return_complex=True))
    clean_spec = ref.power_compress(spec)  # (B, 2, F, T), train.py:88-98
    clean_real, clean_imag = clean_spec[:, 0:1], clean_spec[:, 1:2]
    clean_mag = torch.sqrt(clean_real**2 + clean_imag**2)  # train.py:103
    est_real, est_imag, est_mag = (ref_step[k][:, None] for k in ("real", "imag", "mag"))
    with torch.no_grad():
        report.check("cmgan discriminator (reference weights): D(clean, est)",
                     max_abs(ours(clean_mag[:, 0], est_mag[:, 0]), ref_disc(clean_mag, est_mag).flatten()), NET_TOL)
        one_labels = torch.ones(2)
        ref_terms = {  # train.py:126-142 (calculate_generator_loss)
            "gan": F.mse_loss(ref_disc(clean_mag, est_mag).flatten(), one_labels),
            "mag": F.mse_loss(est_mag, clean_mag),
            "ri": F.mse_loss(est_real, clean_real) + F.mse_loss(est_imag, clean_imag),
            "time": torch.mean(torch.abs(ref_step["audio"] - clean)),
        }
        ref_total = 0.1 * ref_terms["ri"] + 0.9 * ref_terms["mag"] + 0.2 * ref_terms["time"] + 0.05 * ref_terms["gan"]
        out = {"wave": ref_step["audio"], "spec": torch.complex(ref_step["real"], ref_step["imag"]),
               "mag": ref_step["mag"]}
        total, terms = losses.generator_loss(out, clean, cfg, cfg.loss.w_gan, ours)
        for name, value in ref_terms.items():
            report.check(f"cmgan loss (configs/cmgan.yaml): {name}", rel_diff(terms[name], value), NET_TOL, "rel_diff")
        report.check("cmgan loss: total (weights of train.py line 28)", rel_diff(total, ref_total), NET_TOL, "rel_diff")
        pesq = torch.tensor([0.3, 0.7])
        ref_disc_loss = (F.mse_loss(ref_disc(clean_mag, clean_mag).flatten(), one_labels)
                         + F.mse_loss(ref_disc(clean_mag, est_mag).flatten(), pesq))  # train.py:162-170
        our_disc_loss, _ = losses.discriminator_loss(ours, clean_mag[:, 0], est_mag[:, 0], pesq,
                                                     torch.ones(2, dtype=torch.bool))
        report.check("cmgan discriminator loss (train.py:162-170)", rel_diff(our_disc_loss, ref_disc_loss), NET_TOL,
                     "rel_diff")
