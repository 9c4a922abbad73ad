"""MP-SENet (``trainer/tasks/speech/models/mpsenet.py`` and the speech losses with ``configs/mpsenet.yaml``)
against the authors' code (yxlu-0102/MP-SENet): network, pipelines, training-step tensors, discriminator,
PESQ labels and losses. Run by ``benchmarks/check_reference_equivalence.py``."""

from __future__ import annotations

import contextlib
import copy
import math

import numpy as np
import torch

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
from trainer.metrics.labeler import PesqLabeler
from trainer.tasks.speech import losses
from trainer.tasks.speech.models import MetricDiscriminator
from trainer.tasks.speech.models import mpsenet as our_mpsenet

__all__ = ["check_mpsenet", "perturbed_reference_mpsenet"]


def perturbed_reference_mpsenet(ref, seed: int) -> torch.nn.Module:
    """The reference ``MPNet(config.json)`` with every floating state entry perturbed (seeded)."""
    torch.manual_seed(seed)
    net = ref.MPNet(ref.h)
    perturb_(net, seed + 1)
    return net.eval()


def mpsenet_reference_infer(ref, model, noisy_wav: torch.Tensor) -> torch.Tensor:
    """MP-SENet ``inference.py`` on an in-memory 1-D wave (CPU)."""
    h = ref.h
    norm_factor = torch.sqrt(len(noisy_wav) / torch.sum(noisy_wav**2.0))
    noisy_wav = (noisy_wav * norm_factor).unsqueeze(0)
    noisy_amp, noisy_pha, _ = ref.mag_pha_stft(noisy_wav, h.n_fft, h.hop_size, h.win_size, h.compress_factor)
    amp_g, pha_g, _ = model(noisy_amp, noisy_pha)
    audio_g = ref.mag_pha_istft(amp_g, pha_g, h.n_fft, h.hop_size, h.win_size, h.compress_factor)
    return (audio_g / norm_factor)[0]


@contextlib.contextmanager
def phase_maps(net: torch.nn.Module):
    """Capture the phase decoder's two maps before ``atan2`` (as (B, F, T)) in ``net``'s next forward.

    Both networks name them ``phase_decoder.phase_conv_r`` / ``phase_conv_i``.
    """
    maps: dict[str, torch.Tensor] = {}
    decoder = net.phase_decoder

    def keep(name):
        return lambda module, inputs, output: maps.__setitem__(name, output[:, 0].transpose(1, 2))

    handles = [decoder.phase_conv_r.register_forward_hook(keep("r")),
               decoder.phase_conv_i.register_forward_hook(keep("i"))]
    try:
        yield maps
    finally:
        for handle in handles:
            handle.remove()


def compare_mpsenet_outputs(report: Report, label: str, ours: tuple, ref: tuple) -> None:
    """Compare ``(amp, pha, com, maps)`` of our network with the reference's.

    ``pha = atan2(x_i, x_r)`` has condition number ``1 / |(x_r, x_i)|``: an error eps in the maps
    moves the phase by up to ``eps / |(x_r, x_i)|``, and with random weights some bins have
    ``|(x_r, x_i)|`` near 1e-3, so float rounding (~1e-7) in the maps shows as ~1e-4 in the
    phase. So the checks are: the maps themselves (absolute), the phase error times
    ``|(x_r, x_i)|``, and the ``com`` error divided by ``1 + amp / |(x_r, x_i)|``; the raw
    phase/com differences are printed for information.
    """
    amp_o, pha_o, com_o, maps_o = ours
    amp_r, pha_r, com_r, maps_r = ref
    report.check(f"{label}: amp", max_abs(amp_o, amp_r), NET_TOL)
    report.check(f"{label}: phase maps x_r, x_i (before atan2)",
                 max(max_abs(maps_o["r"], maps_r["r"]), max_abs(maps_o["i"], maps_r["i"])), NET_TOL)
    radius = torch.hypot(maps_r["r"], maps_r["i"]).detach().double()
    d_pha = losses.anti_wrapping(pha_o.detach().double() - pha_r.detach().double())
    d_com = (com_o.detach().double() - com_r.detach().double()).norm(dim=-1)
    report.info(f"{label}: raw max |pha diff| / |com diff| / min |(x_r, x_i)|",
                f"{float(d_pha.max()):.3e} / {float(d_com.max()):.3e} / {float(radius.min()):.3e}")
    report.check(f"{label}: pha (diff x |(x_r, x_i)|)", float((d_pha * radius).max()), NET_TOL, "max_scaled_diff")
    report.check(f"{label}: com (diff / (1 + amp / |(x_r, x_i)|))",
                 float((d_com / (1 + amp_r.detach().double() / radius)).max()), NET_TOL, "max_scaled_diff")


def run_mpsenet_net(net: torch.nn.Module, amp: torch.Tensor, pha: torch.Tensor) -> tuple:
    with phase_maps(net) as maps:
        out = net(amp, pha)
    return (*out, maps)


def check_mpsenet(report: Report, ref, seed: int) -> None:
    print("MP-SENet")
    ref_net, ours, wrapper = build_mpsenet_networks(report, ref, seed)
    gen = torch.Generator().manual_seed(seed + 2)
    check_mpsenet_networks(report, ref_net, ours, wrapper, gen, seed)
    ref_net.eval(), ours.eval(), wrapper.eval()
    with torch.no_grad():
        check_mpsenet_pipelines(report, ref, ref_net, wrapper, seed)
        clean, generated, targets, mag_g_hat, com_g_hat = check_mpsenet_train_step(report, ref, ref_net, wrapper,
                                                                                   gen, seed)
    check_mpsenet_losses(report, ref, seed, clean, generated, targets, mag_g_hat, com_g_hat)


def build_mpsenet_networks(report: Report, ref, seed: int) -> tuple:
    """The perturbed reference ``MPNet``, our network and our generator wrapper with its weights,
    after checking parameter counts and state-dict keys."""
    h = ref.h
    torch.manual_seed(seed)
    ref_net = ref.MPNet(h)
    report.equal("mpsenet: reference parameters (default init) == 2,263,372", num_params(ref_net),
                 EXPECTED_PARAMS["mpsenet"])
    perturb_(ref_net, seed + 1)
    ours = our_mpsenet.MPSENetNet(dense_channel=h.dense_channel, num_tsblocks=4, beta=h.beta, n_fft=h.n_fft)
    ours.load_state_dict(ref_net.state_dict(), strict=True)
    wrapper = our_mpsenet.MPSENetGenerator(dense_channel=h.dense_channel, beta=h.beta)
    our_mpsenet.load_official_state_dict(wrapper, {"generator": ref_net.state_dict()}, strict=True)
    report.equal("mpsenet: our parameters", num_params(ours), num_params(ref_net))
    report.equal("mpsenet: wrapper parameters == network parameters", num_params(wrapper), num_params(ref_net))
    compare_state_dicts(report, "mpsenet", ours, ref_net)
    report.equal("mpsenet: wrapper keys == 'net.' + reference keys", list(wrapper.state_dict()),
                 [our_mpsenet.WRAPPER_PREFIX + k for k in ref_net.state_dict()])
    return ref_net, ours, wrapper


def check_mpsenet_networks(report: Report, ref_net, ours, wrapper, gen: torch.Generator, seed: int) -> None:
    """(a) networks on (amp, pha): eval and train mode (all dropouts are 0), float64, gradients."""
    amp = torch.rand(2, 201, 64, generator=gen) * 2.0
    pha = (torch.rand(2, 201, 64, generator=gen) * 2 - 1) * math.pi
    for mode in ("eval", "train"):
        ref_net.train(mode == "train"), ours.train(mode == "train")
        with torch.no_grad():
            ref_out, our_out = run_mpsenet_net(ref_net, amp, pha), run_mpsenet_net(ours, amp, pha)
        compare_mpsenet_outputs(report, f"mpsenet net ({mode})", our_out, ref_out)
    ref_net.eval(), ours.eval(), wrapper.eval()
    with torch.no_grad():
        ref64 = run_mpsenet_net(copy.deepcopy(ref_net).double(), amp.double(), pha.double())
        ours64 = run_mpsenet_net(copy.deepcopy(ours).double(), amp.double(), pha.double())
    report.check("mpsenet net (eval, float64): amp, pha, com (raw)",
                 max(max_abs(a, b) for a, b in zip(ours64[:3], ref64[:3], strict=True)), NET_TOL)

    # Gradients of a loss on amp and the pre-atan2 maps (atan2/cos/sin after them are the same
    # torch code on both sides, and ill-conditioned, see compare_mpsenet_outputs).
    def amp_and_maps(net, a, p):
        out = run_mpsenet_net(net, a, p)
        return out[0], out[3]["r"], out[3]["i"]

    gradient_checks(report, "mpsenet net (eval)", ref_net, ours, amp_and_maps, (amp, pha), seed)


def check_mpsenet_pipelines(report: Report, ref, ref_net, wrapper, seed: int) -> None:
    """(b) wave -> wave, inference.py, on 2 s and an odd length."""
    for label, n in (("2 s speech-like", 2 * SAMPLE_RATE), ("odd length 32037", 2 * SAMPLE_RATE + 37)):
        noisy = speech_like(n, seed + 4)
        ref_wave = mpsenet_reference_infer(ref, ref_net, noisy)
        norm = torch.sqrt(n / torch.sum(noisy**2))
        out = wrapper((noisy * norm)[None])
        our_wave = out["wave"][0] / norm
        common = ref_wave.shape[-1]
        report.equal(f"mpsenet pipeline ({label}): our length == input length", our_wave.shape[-1], n)
        report.info(f"mpsenet pipeline ({label}): reference length", common)
        report.check(f"mpsenet pipeline ({label}): wave (first {common} samples)",
                     max_abs(our_wave[:common], ref_wave), WAVE_TOL)
        report.info(f"mpsenet pipeline ({label}): reference wave peak", f"{float(ref_wave.abs().max()):.4f}")


def check_mpsenet_train_step(report: Report, ref, ref_net, wrapper, gen: torch.Generator, seed: int) -> tuple:
    """A training-style batch (train.py lines 121-127), clean/noisy pairs scaled by the noisy RMS: the
    front-end and the generator against the reference's; returns the reference's step tensors for the
    loss checks: ``clean, (mag_g, pha_g, com_g, audio_g), (clean_mag, clean_pha, clean_com), mag_g_hat,
    com_g_hat``."""
    h = ref.h
    clean = torch.stack([speech_like(SAMPLE_RATE, seed + 5, snr_db=60.0),
                         speech_like(SAMPLE_RATE, seed + 6, snr_db=60.0)])
    noise = torch.randn(clean.shape, generator=gen) * 0.05
    noisy = clean + noise
    norm = torch.sqrt(noisy.size(-1) / torch.sum(noisy**2.0, dim=-1, keepdim=True))
    clean, noisy = clean * norm, noisy * norm
    args = (h.n_fft, h.hop_size, h.win_size, h.compress_factor)
    clean_mag, clean_pha, clean_com = ref.mag_pha_stft(clean, *args)
    noisy_mag, noisy_pha, _ = ref.mag_pha_stft(noisy, *args)
    with phase_maps(ref_net) as ref_maps:
        mag_g, pha_g, com_g = ref_net(noisy_mag, noisy_pha)
    audio_g = ref.mag_pha_istft(mag_g, pha_g, *args)
    mag_g_hat, _, com_g_hat = ref.mag_pha_stft(audio_g, *args)

    ours_front = our_mpsenet.mag_pha_stft(noisy)
    for name, a, b in zip(("mag", "pha", "com"), ours_front,
                          (noisy_mag, noisy_pha, ref.mag_pha_stft(noisy, *args)[2]), strict=True):
        report.check(f"mpsenet mag_pha_stft: {name}", max_abs(a, b), NET_TOL)
    report.check("mpsenet mag_pha_istft", max_abs(our_mpsenet.mag_pha_istft(mag_g, pha_g), audio_g), WAVE_TOL)

    with phase_maps(wrapper.net) as our_maps:
        out = wrapper(noisy)
    compare_mpsenet_outputs(report, "mpsenet train step (B=2)", (out["amp"], out["pha"], out["com"], our_maps),
                            (mag_g, pha_g, com_g, ref_maps))
    report.equal("mpsenet train step (B=2): spec is com as complex, mag is amp",
                 bool(torch.equal(torch.view_as_real(out["spec"]), out["com"]) and out["mag"] is out["amp"]), True)
    report.check("mpsenet train step (B=2): audio_g", max_abs(out["wave"], audio_g), WAVE_TOL)
    return clean, (mag_g, pha_g, com_g, audio_g), (clean_mag, clean_pha, clean_com), mag_g_hat, com_g_hat


def check_mpsenet_losses(report: Report, ref, seed: int, clean: torch.Tensor, generated: tuple, targets: tuple,
                         mag_g_hat: torch.Tensor, com_g_hat: torch.Tensor) -> None:
    """Our discriminator with the reference's weights, the PESQ labels, and the speech task's losses with
    configs/mpsenet.yaml on the reference's training-step tensors (train.py lines 129-181)."""
    F = torch.nn.functional
    mag_g, pha_g, com_g, audio_g = generated
    clean_mag, clean_pha, clean_com = targets
    torch.manual_seed(seed + 7)
    ref_disc = ref.MetricDiscriminator()
    perturb_(ref_disc, seed + 12, scale=0.02)  # spread-out outputs (a fresh D saturates near 0 here)
    ref_disc.eval()
    ours = MetricDiscriminator(num_channels=16).eval()
    ours.load_state_dict(metric_discriminator_state(ref_disc.state_dict()), strict=True)
    cfg = load_config("configs/mpsenet.yaml")
    with torch.no_grad():
        report.check("mpsenet discriminator (reference weights): D(clean, est)",
                     max_abs(ours(clean_mag, mag_g_hat), ref_disc(clean_mag, mag_g_hat).flatten()), NET_TOL)
        one_labels = torch.ones(clean.shape[0])
        ref_pesq = ref.batch_pesq(list(clean.numpy()), list(audio_g.numpy()))  # train.py:129-130
        scores, valid = PesqLabeler(0).score(clean.numpy(), audio_g.numpy(), np.full(len(clean), clean.shape[-1]),
                                             sr=SAMPLE_RATE)
        our_pesq = torch.as_tensor(scores, dtype=torch.float32)
        if ref_pesq is None or not valid.all():
            report.equal("mpsenet PESQ labels: failed items", [bool(v) for v in valid],
                         [ref_pesq is not None] * len(valid))
        else:
            report.check("mpsenet PESQ labels (PesqLabeler vs batch_pesq)", max_abs(our_pesq, ref_pesq), NET_TOL)

        metric_r, metric_g = ref_disc(clean_mag, clean_mag), ref_disc(clean_mag, mag_g_hat)
        ip, gd, iaf = ref.phase_losses(clean_pha, pha_g)
        ref_terms = {  # ours' names: train.py's
            "mag": F.mse_loss(clean_mag, mag_g),  # loss_mag
            "phase": ip + gd + iaf,  # loss_pha
            "ri": F.mse_loss(clean_com, com_g) * 2,  # loss_com
            "consistency": F.mse_loss(com_g, com_g_hat) * 2,  # loss_stft
            "time": F.l1_loss(clean, audio_g),  # loss_time
            "gan": F.mse_loss(metric_g.flatten(), one_labels),  # loss_metric
        }
        ref_total = (ref_terms["mag"] * 0.9 + ref_terms["phase"] * 0.3 + ref_terms["ri"] * 0.1
                     + ref_terms["consistency"] * 0.1 + ref_terms["gan"] * 0.05 + ref_terms["time"] * 0.2)
        out = {"wave": audio_g, "spec": torch.complex(com_g[..., 0], com_g[..., 1]), "mag": mag_g, "pha": pha_g}
        total, terms = losses.generator_loss(out, clean, cfg, cfg.loss.w_gan, ours)
        for name, value in ref_terms.items():
            report.check(f"mpsenet loss (configs/mpsenet.yaml): {name}", rel_diff(terms[name], value), NET_TOL,
                         "rel_diff")
        report.check("mpsenet loss: total (loss_gen_all, train.py line 181)", rel_diff(total, ref_total), NET_TOL,
                     "rel_diff")
        pesq = ref_pesq if ref_pesq is not None else torch.full((len(clean),), 0.5)
        ref_disc_loss = F.mse_loss(one_labels, metric_r.flatten()) + F.mse_loss(pesq, metric_g.flatten())
        our_disc_loss, _ = losses.discriminator_loss(ours, clean_mag, mag_g_hat, pesq,
                                                     torch.ones(len(clean), dtype=torch.bool))
        report.check("mpsenet discriminator loss (loss_disc_all, train.py:134-144)",
                     rel_diff(our_disc_loss, ref_disc_loss), NET_TOL, "rel_diff")
        wrapped = (torch.rand(4, 201, 50, generator=torch.Generator().manual_seed(seed)) - 0.5) * 40.0
        report.check("mpsenet anti_wrapping on [-20, 20]",
                     max_abs(losses.anti_wrapping(wrapped), ref.anti_wrapping_function(wrapped)), NET_TOL)
        report.info("mpsenet loss: reference values",
                    {k: round(float(v), 6)
                     for k, v in {**ref_terms, "total": ref_total, "disc": ref_disc_loss}.items()})
