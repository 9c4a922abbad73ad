"""Prove ``trainer_new``'s CMGAN and MP-SENet equal to the authors' reference code.

    PYTHONPATH=/path/with/einops .venv/bin/python benchmarks/check_reference_equivalence.py \\
        --cmgan-src ~/src/CMGAN --mpsenet-src ~/src/MP-SENet [--json out.json]

``--cmgan-src`` / ``--mpsenet-src`` are the user's own checkouts of
https://github.com/ruizhecao96/CMGAN and https://github.com/yxlu-0102/MP-SENet (repository
roots; for CMGAN the ``src`` folder works too). The reference code is imported from there at
run time; none of it is part of this repository. The reference CMGAN conformer needs
``einops`` (a dependency of the reference, not of ours: install it anywhere on ``PYTHONPATH``).
MP-SENet's ``dataset.py`` imports ``librosa`` only for file loading; when librosa is missing
an empty stand-in module is used while importing it (``mag_pha_stft`` does not use it).

For each model the script

1. builds the reference generator (``TSCNet(64, 201)``; ``MPNet(config.json)``) with
   ``torch.manual_seed(seed)``, then perturbs *every* floating state entry with small seeded
   noise (so norms, PReLU slopes, sigmoid slopes, relative-position tables and BatchNorm
   running statistics all differ from their defaults: a mis-wired key cannot hide), and copies
   that state dict into ours with ``strict=True`` (network and wrapper);
2. compares parameter counts and state-dict keys, shapes and order;
3. runs the same random spectra through both networks: eval mode in float32 and float64,
   train mode with the same RNG seed (CMGAN's dropout 0.2 and BatchNorm batch statistics),
   and parameter gradients of a random linear functional of the outputs (hard check in
   float64; float32 printed next to the reference's own float32-vs-float64 error, because
   these deep networks amplify float32 rounding in their gradients to ~1e-3 of the largest
   entry). MP-SENet's phase is ``atan2`` of two maps and ill-conditioned where both are
   small, so its float32 phase/com are checked through those maps (see
   ``compare_mpsenet_outputs``) and the raw differences are printed;
4. runs whole wave->wave pipelines: the reference's inference path re-expressed here with the
   reference's own functions (CMGAN: ``evaluation.enhance_one_track``'s steps with
   ``utils.power_compress``/``power_uncompress``; MP-SENet: ``inference.py``'s steps with
   ``dataset.mag_pha_stft``/``mag_pha_istft``) against our wrappers, on a 2 s speech-like
   signal (harmonics with a gliding f0, formant weighting, syllable envelope, noise), the
   same signal at an odd length, and a training-style batch (``train.py``'s generator step);
5. (MP-SENet) compares our loss functions with the reference's ``phase_losses`` and the
   ``train.py`` expressions (lines 134-181) on the pipeline's tensors, plus the PESQ
   normalisation of ``models/discriminator.py``'s ``batch_pesq``.

Torch 2 adaptation of the CMGAN reference (written for torch 1.10): its ``torch.stft``
without ``return_complex`` and ``torch.istft`` of a real ``(..., 2)`` tensor are expressed as
``view_as_real(stft(..., return_complex=True))`` and ``istft(view_as_complex(x))``.

Observed (torch 2.14.1 CPU, seed 0; the full output is in the commit that added this
script): parameters 1,834,833 (CMGAN) and 2,263,372 (MP-SENet) on both sides, identical keys,
shapes and order; float32 network outputs within 6e-6, float64 within 3e-13, float64
gradients within 3e-15 of the largest entry; waves within 2e-7 (CMGAN, inference path) and
1e-5 (MP-SENet, training batch); loss terms identical. About 4 CPU-minutes.

Exit status: 0 when every check passes; 1 when a network difference exceeds 1e-5 (absolute,
on outputs; relative to the largest value for gradients and losses), a wave difference
exceeds 1e-4, or a parameter count / key list differs; 2 when the reference cannot be imported.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import sys
import types
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from trainer_new import cmgan as our_cmgan  # noqa: E402
from trainer_new import mpsenet as our_mpsenet  # noqa: E402
from trainer_new import mpsenet_losses as our_losses  # noqa: E402

NET_TOL = 1e-5
WAVE_TOL = 1e-4
EXPECTED_PARAMS = {"cmgan": 1_834_833, "mpsenet": 2_263_372}
SAMPLE_RATE = 16000
# Top-level module names the two reference repositories both use: each import must see only
# its own repository's copies.
_REFERENCE_TOP_LEVEL = ("models", "utils", "env", "dataset", "data", "tools")


# ------------------------------------------------------------------------------ bookkeeping


class Report:
    """Collects (name, value, tolerance) rows and prints them as they come."""

    def __init__(self):
        self.rows: list[dict] = []

    def check(self, name: str, value: float, tol: float, kind: str = "max_abs_diff") -> None:
        ok = bool(value <= tol)
        self.rows.append({"check": name, kind: value, "tol": tol, "ok": ok})
        print(f"  {'ok  ' if ok else 'FAIL'} {name:<64s} {kind}={value:.3e} (tol {tol:.0e})")

    def equal(self, name: str, ours, ref) -> None:
        ok = ours == ref
        self.rows.append({"check": name, "ours": ours, "reference": ref, "ok": ok})
        shown = f"{ours} == {ref}" if isinstance(ours, int | str) else ("identical" if ok else "differ")
        print(f"  {'ok  ' if ok else 'FAIL'} {name:<64s} {shown}")

    def info(self, name: str, value) -> None:
        self.rows.append({"check": name, "info": value, "ok": True})
        print(f"  info {name:<64s} {value}")

    @property
    def failed(self) -> list[str]:
        return [r["check"] for r in self.rows if not r["ok"]]


def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch {tuple(a.shape)} vs {tuple(b.shape)}")
    if a.is_complex():
        a, b = torch.view_as_real(a), torch.view_as_real(b)
    return float((a.double() - b.double()).abs().max())


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    scale = float(b.double().abs().max())
    return max_abs(a, b) / max(scale, 1e-30)


# ------------------------------------------------------------------------ reference imports


@contextlib.contextmanager
def reference_imports(root: Path, stub_modules: tuple[str, ...] = ()):
    """Import from ``root`` with a clean slate for the clashing top-level names; undo afterwards.

    Modules imported from ``root`` are dropped from ``sys.modules`` on exit (the objects the
    caller kept stay usable), so the other repository's ``models``/``utils`` can be imported
    next. ``stub_modules`` that are not installed get an empty stand-in for the duration.
    """
    saved_path = list(sys.path)
    saved = {n: m for n, m in sys.modules.items() if n.split(".")[0] in _REFERENCE_TOP_LEVEL}
    for name in saved:
        del sys.modules[name]
    stubs = []
    for name in stub_modules:
        try:
            __import__(name)
        except ImportError:
            sys.modules[name] = types.ModuleType(name)
            stubs.append(name)
    sys.path.insert(0, str(root))
    try:
        yield
    finally:
        sys.path[:] = saved_path
        for name in list(sys.modules):
            module = sys.modules[name]
            file = getattr(module, "__file__", None) or ""
            if name.split(".")[0] in _REFERENCE_TOP_LEVEL or file.startswith(str(root)):
                del sys.modules[name]
        for name in stubs:
            sys.modules.pop(name, None)
        sys.modules.update(saved)


def import_cmgan(src: Path) -> types.SimpleNamespace:
    root = src / "src" if (src / "src" / "models" / "generator.py").is_file() else src
    if not (root / "models" / "generator.py").is_file():
        raise FileNotFoundError(f"--cmgan-src {src}: no models/generator.py under it or its src/")
    with reference_imports(root):
        import models.generator as generator  # type: ignore[import-not-found]
        import utils  # type: ignore[import-not-found]
    return types.SimpleNamespace(root=root, TSCNet=generator.TSCNet, power_compress=utils.power_compress,
                                 power_uncompress=utils.power_uncompress)


def import_mpsenet(src: Path) -> types.SimpleNamespace:
    if not (src / "models" / "model.py").is_file():
        raise FileNotFoundError(f"--mpsenet-src {src}: no models/model.py under it")
    with reference_imports(src, stub_modules=("librosa",)):
        import dataset  # type: ignore[import-not-found]
        import env  # type: ignore[import-not-found]
        import models.discriminator as discriminator  # type: ignore[import-not-found]
        import models.model as model  # type: ignore[import-not-found]
    config = env.AttrDict(json.loads((src / "config.json").read_text()))
    return types.SimpleNamespace(root=src, MPNet=model.MPNet, phase_losses=model.phase_losses,
                                 anti_wrapping_function=model.anti_wrapping_function,
                                 MetricDiscriminator=discriminator.MetricDiscriminator,
                                 batch_pesq=discriminator.batch_pesq, cal_pesq=discriminator.cal_pesq,
                                 mag_pha_stft=dataset.mag_pha_stft, mag_pha_istft=dataset.mag_pha_istft,
                                 h=config)


# ------------------------------------------------------------------------------- test data


def speech_like(num_samples: int, seed: int, snr_db: float = 5.0) -> torch.Tensor:
    """A voiced, speech-like test signal (float32, 1-D) with additive noise at ``snr_db``."""
    rng = np.random.default_rng(seed)
    t = np.arange(num_samples) / SAMPLE_RATE
    f0 = 120.0 + 100.0 * t / max(t[-1], 1e-9) + 8.0 * np.sin(2 * np.pi * 5.0 * t)   # glide + vibrato
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    voiced = np.zeros(num_samples)
    for k in range(1, 40):
        freq = k * f0
        # Formant-like weighting (peaks near 500, 1500, 2500 Hz), nothing above 7.5 kHz.
        gain = sum(np.exp(-0.5 * ((freq - fc) / 150.0) ** 2) for fc in (500.0, 1500.0, 2500.0)) + 0.05 / k
        voiced += np.where(freq < 7500.0, gain, 0.0) * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
    envelope = 0.5 * (1 - np.cos(2 * np.pi * 4.0 * t)) ** 2                           # 4 syllables/s
    clean = envelope * voiced
    clean /= np.sqrt(np.mean(clean**2))
    noise = rng.standard_normal(num_samples) * 10 ** (-snr_db / 20.0)
    return torch.from_numpy(0.1 * (clean + noise)).float()


def perturb_(module: torch.nn.Module, seed: int, scale: float = 0.05) -> None:
    """Add seeded noise to every floating state entry (parameters and buffers)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, tensor in sorted(module.state_dict(keep_vars=True).items()):
            if tensor.is_floating_point():
                tensor.add_(scale * torch.randn(tensor.shape, generator=gen, dtype=tensor.dtype))


def num_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def compare_state_dicts(report: Report, name: str, ours: torch.nn.Module, ref: torch.nn.Module) -> None:
    a, b = ours.state_dict(), ref.state_dict()
    report.equal(f"{name}: state-dict keys (and order)", list(a), list(b))
    report.equal(f"{name}: state-dict shapes", [tuple(v.shape) for v in a.values()],
                 [tuple(v.shape) for v in b.values()])


def grad_diff(ours: torch.nn.Module, ref: torch.nn.Module) -> tuple[float, str]:
    """Worst parameter-gradient difference relative to the model's largest gradient entry.

    (Per-tensor relative differences are meaningless for tensors whose exact gradient is 0 --
    e.g. the bias of a convolution followed by an instance norm -- where both hold rounding noise.)
    """
    ours_grads = dict(ours.named_parameters())
    ref_grads = [(k, p.grad) for k, p in ref.named_parameters() if p.grad is not None]
    scale = max(float(g.abs().max()) for _, g in ref_grads)
    worst, worst_key = 0.0, "-"
    for key, grad in ref_grads:
        d = max_abs(ours_grads[key].grad, grad) / scale
        if d > worst:
            worst, worst_key = d, key
    return worst, worst_key


def _weighted_sum(tensors, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    total = 0.0
    for t in tensors:
        w = torch.randn(t.shape, generator=gen, dtype=torch.float64).to(t.dtype)
        total = total + (t * w).sum()
    return total


def gradient_checks(report: Report, name: str, ref_net: torch.nn.Module, ours: torch.nn.Module,
                    loss_outputs, inputs: tuple, seed: int) -> None:
    """Parameter gradients of a random linear functional of ``loss_outputs(net, *inputs)``, eval mode.

    The hard check runs both networks in float64, where equal arithmetic must agree to ~1e-12.
    In float32 these deep networks amplify rounding: the reference's own float32 gradients
    differ from its float64 ones by ~1e-4..1e-3 of the largest entry, so the float32
    comparison is printed with that baseline, for information.
    """
    grads = {}
    for dtype in (torch.float64, torch.float32):
        nets = {"ref": copy.deepcopy(ref_net).to(dtype).eval(), "ours": copy.deepcopy(ours).to(dtype).eval()}
        for net in nets.values():
            _weighted_sum(loss_outputs(net, *(x.to(dtype) for x in inputs)), seed).backward()
        grads[dtype] = nets
    worst, key = grad_diff(grads[torch.float64]["ours"], grads[torch.float64]["ref"])
    report.check(f"{name} float64: parameter gradients (worst: {key})", worst, NET_TOL, "max_diff/max|grad|")
    ours32, _ = grad_diff(grads[torch.float32]["ours"], grads[torch.float32]["ref"])
    ref32, _ = grad_diff(grads[torch.float32]["ref"], grads[torch.float64]["ref"])
    report.info(f"{name} float32 gradients: ours vs ref / ref vs ref-float64",
                f"{ours32:.2e} / {ref32:.2e} (of max |grad|)")


# ----------------------------------------------------------------------------------- CMGAN


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
    torch.manual_seed(seed)
    ref_net = ref.TSCNet(num_channel=64, num_features=201)
    report.equal("cmgan: reference parameters (default init) == 1,834,833", num_params(ref_net),
                 EXPECTED_PARAMS["cmgan"])
    perturb_(ref_net, seed + 1)
    ours = our_cmgan.CMGANNet(num_channel=64, num_features=201)
    ours.load_state_dict(ref_net.state_dict(), strict=True)
    wrapper = our_cmgan.CMGANGenerator()
    our_cmgan.load_official_state_dict(wrapper, ref_net.state_dict(), strict=True)
    report.equal("cmgan: our parameters", num_params(ours), num_params(ref_net))
    report.equal("cmgan: wrapper parameters == network parameters", num_params(wrapper), num_params(ref_net))
    compare_state_dicts(report, "cmgan", ours, ref_net)
    report.equal("cmgan: wrapper keys == 'net.' + reference keys", list(wrapper.state_dict()),
                 [our_cmgan.WRAPPER_PREFIX + k for k in ref_net.state_dict()])

    # (a) networks on spectra: eval mode, float64, gradients, train mode
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

    # (b) wave -> wave: enhance_one_track on a 2 s speech-like signal, and at an odd length
    with torch.no_grad():
        for label, n in (("2 s speech-like", 2 * SAMPLE_RATE), ("odd length 32037", 2 * SAMPLE_RATE + 37)):
            noisy = speech_like(n, seed + 4)[None]
            ref_wave = cmgan_reference_enhance(ref, ref_net, noisy)
            c = torch.sqrt(n / torch.sum(noisy**2, dim=-1, keepdim=True))   # caller's normalisation
            out = wrapper(noisy * c)
            our_wave = out["wave"] / c
            report.equal(f"cmgan pipeline ({label}): output length", our_wave.shape[-1], ref_wave.shape[-1])
            report.check(f"cmgan pipeline ({label}): wave", max_abs(our_wave[0], ref_wave), WAVE_TOL)
            report.info(f"cmgan pipeline ({label}): reference wave peak", f"{float(ref_wave.abs().max()):.4f}")

        # training-style batch (B = 2, 1 s, unit-RMS scaled as train.py does)
        batch = torch.stack([speech_like(SAMPLE_RATE, seed + 5), speech_like(SAMPLE_RATE, seed + 6, snr_db=0.0)])
        c = torch.sqrt(batch.size(-1) / torch.sum(batch**2.0, dim=-1))
        batch = torch.transpose(torch.transpose(batch, 0, 1) * c, 0, 1)
        ref_step = cmgan_reference_train_forward(ref, ref_net, batch)
        out = wrapper(batch)
        report.check("cmgan train step (B=2): est_real", max_abs(out["spec"].real, ref_step["real"]), NET_TOL)
        report.check("cmgan train step (B=2): est_imag", max_abs(out["spec"].imag, ref_step["imag"]), NET_TOL)
        report.check("cmgan train step (B=2): est_mag", max_abs(out["mag"], ref_step["mag"]), NET_TOL)
        report.check("cmgan train step (B=2): est_audio", max_abs(out["wave"], ref_step["audio"]), WAVE_TOL)

        # analysis front-end alone
        ref_spec = ref.power_compress(torch.view_as_real(torch.stft(
            batch, 400, 100, window=torch.hamming_window(400), onesided=True, return_complex=True)))
        ours_spec = our_cmgan.compressed_spectrum(batch)
        report.check("cmgan power_compress(stft): real/imag", max(max_abs(ours_spec.real, ref_spec[:, 0]),
                                                                  max_abs(ours_spec.imag, ref_spec[:, 1])), NET_TOL)


# --------------------------------------------------------------------------------- MP-SENet


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
    d_pha = our_losses.anti_wrapping(pha_o.detach().double() - pha_r.detach().double())
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

    # (a) networks on (amp, pha): eval and train mode (all dropouts are 0), float64, gradients
    gen = torch.Generator().manual_seed(seed + 2)
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
    ref_net.eval(), ours.eval(), wrapper.eval()

    with torch.no_grad():
        # (b) wave -> wave, inference.py
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

        # training-style batch (train.py lines 121-127), clean/noisy pairs scaled by the noisy RMS
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
        for name, a, b in zip(("mag", "pha", "com"), ours_front, (noisy_mag, noisy_pha, ref.mag_pha_stft(noisy, *args)[2]),
                              strict=True):
            report.check(f"mpsenet mag_pha_stft: {name}", max_abs(a, b), NET_TOL)
        report.check("mpsenet mag_pha_istft", max_abs(our_mpsenet.mag_pha_istft(mag_g, pha_g), audio_g), WAVE_TOL)

        with phase_maps(wrapper.net) as our_maps:
            out = wrapper(noisy)
        compare_mpsenet_outputs(report, "mpsenet train step (B=2)", (out["amp"], out["pha"], out["com"], our_maps),
                                (mag_g, pha_g, com_g, ref_maps))
        report.equal("mpsenet train step (B=2): spec is com as complex, mag is amp",
                     bool(torch.equal(torch.view_as_real(out["spec"]), out["com"]) and out["mag"] is out["amp"]), True)
        report.check("mpsenet train step (B=2): audio_g", max_abs(out["wave"], audio_g), WAVE_TOL)

        # (c) losses on the same tensors (reference: model.phase_losses + train.py expressions)
        F = torch.nn.functional
        torch.manual_seed(seed + 7)
        disc = ref.MetricDiscriminator().eval()
        one_labels = torch.ones(clean.shape[0])
        metric_r = disc(clean_mag, clean_mag)
        metric_g = disc(clean_mag, mag_g_hat)
        pesq_list = [ref.cal_pesq(c.numpy(), n.numpy()) for c, n in zip(clean, noisy, strict=True)]
        ref_pesq = ref.batch_pesq(list(clean.numpy()), list(noisy.numpy()))
        our_pesq = our_losses.normalize_pesq(pesq_list)
        if ref_pesq is None or our_pesq is None:
            report.equal("mpsenet loss: batch_pesq None-ness", our_pesq is None, ref_pesq is None)
        else:
            report.check("mpsenet loss: normalised PESQ target", max_abs(our_pesq, ref_pesq), NET_TOL)
        report.info("mpsenet loss: PESQ of the clean/noisy batch", [round(float(p), 3) for p in pesq_list])

        ip, gd, iaf = ref.phase_losses(clean_pha, pha_g)
        ref_terms = {
            "magnitude": F.mse_loss(clean_mag, mag_g),
            "phase": ip + gd + iaf,
            "complex": F.mse_loss(clean_com, com_g) * 2,
            "consistency": F.mse_loss(com_g, com_g_hat) * 2,
            "time": F.l1_loss(clean, audio_g),
            "metric": F.mse_loss(metric_g.flatten(), one_labels),
        }
        ref_total = (ref_terms["magnitude"] * 0.9 + ref_terms["phase"] * 0.3 + ref_terms["complex"] * 0.1
                     + ref_terms["consistency"] * 0.1 + ref_terms["metric"] * 0.05 + ref_terms["time"] * 0.2)
        loss_disc = F.mse_loss(one_labels, metric_r.flatten())
        if ref_pesq is not None:
            loss_disc = loss_disc + F.mse_loss(ref_pesq, metric_g.flatten())

        # Our loss functions on the reference's own tensors (same inputs, so any difference is
        # the functions'); the complex terms take the complex layout of our wrapper's ``spec``.
        our_ip, our_gd, our_iaf = our_losses.phase_losses(clean_pha, pha_g)
        our_terms = {
            "magnitude": our_losses.magnitude_loss(clean_mag, mag_g),
            "phase": our_losses.phase_loss(clean_pha, pha_g),
            "complex": our_losses.complex_loss(clean_com, torch.view_as_complex(com_g.contiguous())),
            "consistency": our_losses.consistency_loss(torch.view_as_complex(com_g.contiguous()), com_g_hat),
            "time": our_losses.time_loss(clean, audio_g),
            "metric": our_losses.metric_generator_loss(metric_g),
        }
        for name, a, b in (("ip", our_ip, ip), ("gd", our_gd, gd), ("iaf", our_iaf, iaf)):
            report.check(f"mpsenet loss: {name}", rel_diff(a, b), NET_TOL, "rel_diff")
        for name in ref_terms:
            report.check(f"mpsenet loss: {name}", rel_diff(our_terms[name], ref_terms[name]), NET_TOL, "rel_diff")
        report.check("mpsenet loss: loss_gen_all (weights of train.py line 181)",
                     rel_diff(our_losses.generator_loss(our_terms), ref_total), NET_TOL, "rel_diff")
        our_disc = our_losses.metric_discriminator_loss(metric_r, metric_g, our_pesq)
        report.check("mpsenet loss: loss_disc_all", rel_diff(our_disc, loss_disc), NET_TOL, "rel_diff")
        # The randomly initialised D saturates near 0 here; repeat the metric terms on spread-out outputs.
        rnd_r, rnd_g = torch.rand(clean.shape[0], 1, generator=gen), torch.rand(clean.shape[0], 1, generator=gen)
        rnd_pesq = torch.rand(clean.shape[0], generator=gen)
        report.check("mpsenet loss: metric (random D outputs)",
                     rel_diff(our_losses.metric_generator_loss(rnd_g), F.mse_loss(rnd_g.flatten(), one_labels)),
                     NET_TOL, "rel_diff")
        report.check("mpsenet loss: loss_disc_all (random D outputs and PESQ)",
                     rel_diff(our_losses.metric_discriminator_loss(rnd_r, rnd_g, rnd_pesq),
                              F.mse_loss(one_labels, rnd_r.flatten()) + F.mse_loss(rnd_pesq, rnd_g.flatten())),
                     NET_TOL, "rel_diff")
        wrapped = (torch.rand(4, 201, 50, generator=gen) - 0.5) * 40.0
        report.check("mpsenet loss: anti_wrapping on [-20, 20]",
                     max_abs(our_losses.anti_wrapping(wrapped), ref.anti_wrapping_function(wrapped)), NET_TOL)
        report.info("mpsenet loss: reference values",
                    {k: round(float(v), 6) for k, v in {**ref_terms, "total": ref_total, "disc": loss_disc}.items()})


# ------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cmgan-src", type=Path, required=True, help="checkout of ruizhecao96/CMGAN")
    parser.add_argument("--mpsenet-src", type=Path, required=True, help="checkout of yxlu-0102/MP-SENet")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    try:
        ref_cmgan = import_cmgan(args.cmgan_src.expanduser().resolve())
        ref_mpsenet = import_mpsenet(args.mpsenet_src.expanduser().resolve())
    except (ImportError, FileNotFoundError) as exc:
        print(f"check_reference_equivalence: cannot import the reference code: {exc!r}", file=sys.stderr)
        if isinstance(exc, ImportError) and "einops" in str(exc):
            print("  (the reference CMGAN needs einops: pip install einops into a path on PYTHONPATH)",
                  file=sys.stderr)
        return 2

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, seed {args.seed}")
    report = Report()
    check_cmgan(report, ref_cmgan, args.seed)
    check_mpsenet(report, ref_mpsenet, args.seed)

    failed = report.failed
    print(f"\n{len(report.rows) - len(failed)}/{len(report.rows)} checks passed"
          + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    if args.json:
        args.json.write_text(json.dumps({"torch": torch.__version__, "seed": args.seed, "rows": report.rows},
                                        indent=1, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
