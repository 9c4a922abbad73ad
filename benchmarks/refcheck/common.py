"""Shared pieces of ``benchmarks/check_reference_equivalence.py``: the report, tolerances, importing the
reference code from the user's checkouts (with the stand-ins it needs on a CPU-only torch 2), test
signals and the network comparison helpers. Nothing here is imported by the toolkit or its tests."""

from __future__ import annotations

import contextlib
import copy
import json
import sys
import types
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
NET_TOL = 1e-5
WAVE_TOL = 1e-4
EXPECTED_PARAMS = {"cmgan": 1_834_833, "mpsenet": 2_263_372}
SAMPLE_RATE = 16000
# Top-level module names the two reference repositories both use: each import must see only
# its own repository's copies.
_REFERENCE_TOP_LEVEL = ("models", "utils", "env", "dataset", "data", "tools", "evaluation", "inference", "train")


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
def reference_imports(root: Path, stub_modules: dict[str, dict] | None = None):
    """Import from ``root`` with a clean slate for the clashing top-level names; undo afterwards.

    Modules imported from ``root`` are dropped from ``sys.modules`` on exit (the objects the
    caller kept stay usable), so the other repository's ``models``/``utils`` can be imported
    next. ``stub_modules`` (name -> attributes) that are not installed get a stand-in module with
    those attributes for the duration.
    """
    saved_path = list(sys.path)
    saved = {n: m for n, m in sys.modules.items() if n.split(".")[0] in _REFERENCE_TOP_LEVEL}
    for name in saved:
        del sys.modules[name]
    stubs = []
    for name, attributes in (stub_modules or {}).items():
        try:
            __import__(name)
        except ImportError:
            module = types.ModuleType(name)
            module.__dict__.update(attributes)
            sys.modules[name] = module
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


def _librosa_load(path, sr=None):
    """Stand-in for ``librosa.load`` on 16 kHz mono files (what MP-SENet's scripts call it with)."""
    import soundfile as sf

    wave, rate = sf.read(path, dtype="float32")
    if sr is not None and rate != sr:
        raise ValueError(f"{path}: {rate} Hz; the stand-in does not resample (give {sr} Hz files)")
    return wave, rate


def import_cmgan(src: Path) -> types.SimpleNamespace:
    root = src / "src" if (src / "src" / "models" / "generator.py").is_file() else src
    if not (root / "models" / "generator.py").is_file():
        raise FileNotFoundError(f"--cmgan-src {src}: no models/generator.py under it or its src/")
    argv, sys.argv = sys.argv, ["evaluation.py"]  # evaluation.py parses the command line when imported
    try:
        with reference_imports(root, stub_modules={"natsort": {"natsorted": sorted}}):
            import evaluation  # type: ignore[import-not-found]  # the authors' inference script (src/evaluation.py)
            import models.discriminator as discriminator  # type: ignore[import-not-found]
            import models.generator as generator  # type: ignore[import-not-found]
            import utils  # type: ignore[import-not-found]
    finally:
        sys.argv = argv
    return types.SimpleNamespace(root=root, TSCNet=generator.TSCNet, power_compress=utils.power_compress,
                                 power_uncompress=utils.power_uncompress, Discriminator=discriminator.Discriminator,
                                 evaluation=evaluation)


def import_mpsenet(src: Path) -> types.SimpleNamespace:
    if not (src / "models" / "model.py").is_file():
        raise FileNotFoundError(f"--mpsenet-src {src}: no models/model.py under it")
    stubs = {"librosa": {"load": _librosa_load}, "rich": {}, "rich.progress": {"track": lambda items, **_: items}}
    with reference_imports(src, stub_modules=stubs):
        import dataset  # type: ignore[import-not-found]
        import env  # type: ignore[import-not-found]
        import inference  # type: ignore[import-not-found]  # the authors' inference script
        import models.discriminator as discriminator  # type: ignore[import-not-found]
        import models.model as model  # type: ignore[import-not-found]
    config = env.AttrDict(json.loads((src / "config.json").read_text()))
    return types.SimpleNamespace(root=src, MPNet=model.MPNet, phase_losses=model.phase_losses,
                                 anti_wrapping_function=model.anti_wrapping_function,
                                 MetricDiscriminator=discriminator.MetricDiscriminator,
                                 batch_pesq=discriminator.batch_pesq, cal_pesq=discriminator.cal_pesq,
                                 mag_pha_stft=dataset.mag_pha_stft, mag_pha_istft=dataset.mag_pha_istft,
                                 h=config, inference=inference)


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


# --------------------------------------------------------------------- running the reference on CPU


@contextlib.contextmanager
def torch1_stft():
    """torch 1's ``stft``/``istft`` on torch 2, on any device: ``torch.stft`` without ``return_complex``
    returns the real ``(..., 2)`` layout; ``torch.istft`` of such a real tensor reads it as complex.
    (CMGAN's ``train.py`` and ``evaluation.py`` need it; restored on exit.)"""
    stft, istft = torch.stft, torch.istft

    def stft_torch1(x, *args, return_complex=None, **kwargs):
        if return_complex is None:
            return torch.view_as_real(stft(x, *args, return_complex=True, **kwargs))
        return stft(x, *args, return_complex=return_complex, **kwargs)

    def istft_torch1(x, *args, **kwargs):
        if not x.is_complex():
            x = torch.view_as_complex(x.contiguous())
        return istft(x, *args, **kwargs)

    torch.stft, torch.istft = stft_torch1, istft_torch1
    try:
        yield
    finally:
        torch.stft, torch.istft = stft, istft


@contextlib.contextmanager
def torch1_on_cpu():
    """Run code written for torch 1.x on CUDA (CMGAN's ``evaluation.py``, ``train.py``) on a CPU-only torch 2.

    :func:`torch1_stft`, and ``.cuda()`` of tensors and modules returns the object itself, ``.to("cuda")``
    of a tensor stays on the CPU (CMGAN's ``batch_pesq``). Nothing else changes; everything is restored
    on exit.
    """
    tensor_cuda, module_cuda, tensor_to = torch.Tensor.cuda, torch.nn.Module.cuda, torch.Tensor.to

    def to_not_cuda(self, *args, **kwargs):
        args = tuple("cpu" if isinstance(a, str) and a.startswith("cuda") else a for a in args)
        return tensor_to(self, *args, **kwargs)

    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.nn.Module.cuda = lambda self, *a, **k: self
    torch.Tensor.to = to_not_cuda
    try:
        with torch1_stft():
            yield
    finally:
        torch.Tensor.cuda, torch.nn.Module.cuda, torch.Tensor.to = tensor_cuda, module_cuda, tensor_to


@contextlib.contextmanager
def captured_writes(module):
    """Replace ``module.sf.write`` (soundfile) by a recorder: {file name: float array as passed}, i.e.
    what the reference script writes, before its 16-bit quantisation."""
    written: dict[str, np.ndarray] = {}
    real = module.sf

    class _Recorder:
        def __getattr__(self, name):
            return getattr(real, name)

        @staticmethod
        def write(path, data, *args, **kwargs):
            written[Path(path).name] = np.array(data, dtype=np.float64, copy=True)

    module.sf = _Recorder()
    try:
        yield written
    finally:
        module.sf = real


def soundfile_torchaudio():
    """A ``torchaudio`` stand-in whose ``load`` reads with soundfile (torchaudio 2.9+ needs torchcodec
    for it): float32 ``(channels, samples)`` scaled like torchaudio's, and the rate."""

    def load(path):
        import soundfile as sf

        wave, rate = sf.read(path, dtype="float32", always_2d=True)
        return torch.from_numpy(wave.T.copy()), rate

    return types.SimpleNamespace(load=load)


# -------------------------------------------------------------------------- the discriminators


def _spectral_norm_state(layer_prefix: str, weight: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> dict:
    return {f"{layer_prefix}.parametrizations.weight.original": weight,
            f"{layer_prefix}.parametrizations.weight.0._u": u,
            f"{layer_prefix}.parametrizations.weight.0._v": v}


def metric_discriminator_state(reference_state: dict) -> dict:
    """A reference MetricGAN discriminator's state (``layers.N`` with ``torch.nn.utils.spectral_norm``;
    CMGAN's ``Discriminator`` and MP-SENet's ``MetricDiscriminator`` have the same layers) as our
    ``MetricDiscriminator``'s (``convs``/``head`` with parametrized spectral norm). Both references and
    ours read (clean, estimate) as (B, 2, freq, frames)."""
    ours: dict[str, torch.Tensor] = {}
    convs = [0, 3, 6, 9]  # reference layer indices of the four convolutions
    for i, ref_index in enumerate(convs):
        weight = reference_state[f"layers.{ref_index}.weight_orig"]
        u, v = reference_state[f"layers.{ref_index}.weight_u"], reference_state[f"layers.{ref_index}.weight_v"]
        ours.update(_spectral_norm_state(f"convs.{3 * i}", weight, u, v))
        for suffix in ("weight", "bias"):
            ours[f"convs.{3 * i + 1}.{suffix}"] = reference_state[f"layers.{ref_index + 1}.{suffix}"]
        ours[f"convs.{3 * i + 2}.weight"] = reference_state[f"layers.{ref_index + 2}.weight"]
    # 12 AdaptiveMaxPool2d, 13 Flatten, 14 Linear, 15 Dropout, 16 PReLU, 17 Linear, 18 LearnableSigmoid
    for ours_index, ref_index in ((0, 14), (3, 17)):
        prefix = f"layers.{ref_index}"
        ours.update(_spectral_norm_state(f"head.{ours_index}", reference_state[f"{prefix}.weight_orig"],
                                         reference_state[f"{prefix}.weight_u"], reference_state[f"{prefix}.weight_v"]))
        ours[f"head.{ours_index}.bias"] = reference_state[f"{prefix}.bias"]
    ours["head.2.weight"] = reference_state["layers.16.weight"]
    ours["head.4.slope"] = reference_state["layers.18.slope"]
    return ours
