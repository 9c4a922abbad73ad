"""The authors' own training steps, for ``benchmarks/bench_peer_step.py``: CMGAN's ``Trainer.train_step``
(``src/train.py``) and the body of MP-SENet's training loop (``train.py``), run from the user's checkouts
on given weights, batch and device. Nothing of the reference code is copied here: CMGAN's method is
called on a bare ``Trainer`` object, MP-SENet's loop body is read from its ``train.py`` (``ast``) and run
as written. Nothing here is imported by the toolkit or its tests."""

from __future__ import annotations

import ast
import contextlib
import sys
import types
from pathlib import Path

import torch

from benchmarks.refcheck.common import reference_imports, torch1_on_cpu, torch1_stft

# Stand-ins for what the reference train.py files import at the top but a step never calls.
_CMGAN_STUBS = {"natsort": {"natsorted": sorted}, "torchinfo": {"summary": lambda *a, **k: None}}
_MPSENET_STUBS = {"librosa": {}, "rich": {}, "rich.progress": {"track": lambda items, **_: items}}
# What the step must do, to be sure the loop body read from MP-SENet's train.py is still the step.
_MPSENET_STEP_CALLS = ("mag_pha_stft", "generator", "mag_pha_istft", "batch_pesq", "discriminator",
                       "phase_losses", "backward", "step")


def reference_context(device: torch.device):
    """The stand-ins torch-1 code needs here: torch 1's stft layout; on a CPU also ``.cuda()`` as a no-op."""
    return torch1_on_cpu() if device.type == "cpu" else torch1_stft()


def import_cmgan_train(src: Path, batch_size: int, cut_len: int) -> types.ModuleType:
    """CMGAN's ``src/train.py`` as a module (its ``args`` parsed from ``--batch_size``/``--cut_len``)."""
    root = src / "src" if (src / "src" / "train.py").is_file() else src
    if not (root / "train.py").is_file():
        raise FileNotFoundError(f"--cmgan-src {src}: no train.py under it or its src/")
    argv, sys.argv = sys.argv, ["train.py", "--batch_size", str(batch_size), "--cut_len", str(cut_len)]
    try:
        with reference_imports(root, stub_modules=_CMGAN_STUBS):
            import train  # type: ignore[import-not-found]  # the authors' training script
    finally:
        sys.argv = argv
    return train


class CmganReferenceStep:
    """``Trainer.train_step`` of CMGAN's train.py on a ``Trainer`` built without its ``__init__``
    (which moves to CUDA, prints summaries and wraps DDP): the same attributes, the optimizers of
    train.py:63-66 (AdamW, lr ``init_lr`` and twice that for the discriminator)."""

    def __init__(self, train: types.ModuleType, generator: torch.nn.Module, discriminator: torch.nn.Module,
                 device: torch.device):
        trainer = train.Trainer.__new__(train.Trainer)
        trainer.n_fft, trainer.hop, trainer.gpu_id = 400, 100, device
        trainer.model, trainer.discriminator = generator.to(device).train(), discriminator.to(device).train()
        trainer.optimizer = torch.optim.AdamW(generator.parameters(), lr=train.args.init_lr)
        trainer.optimizer_disc = torch.optim.AdamW(discriminator.parameters(), lr=2 * train.args.init_lr)
        self.trainer, self.device = trainer, device

    def __call__(self, clean: torch.Tensor, noisy: torch.Tensor) -> tuple[float, float]:
        """One step on a (clean, noisy) batch as the reference's loader yields it; (G loss, D loss)."""
        with reference_context(self.device):
            return self.trainer.train_step((clean, noisy))


def import_mpsenet_train(src: Path) -> types.ModuleType:
    if not (src / "train.py").is_file():
        raise FileNotFoundError(f"--mpsenet-src {src}: no train.py under it")
    with reference_imports(src, stub_modules=_MPSENET_STUBS):
        import train  # type: ignore[import-not-found]  # the authors' training script
    return train


def _is_rank0_block(node: ast.stmt) -> bool:
    """``if rank == 0: ...`` (timing, logging, checkpoints, validation: not part of the step)."""
    return (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
            and isinstance(node.test.left, ast.Name) and node.test.left.id == "rank")


def _is_step_counter(node: ast.stmt) -> bool:
    return isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name) and node.target.id == "steps"


def mpsenet_step_code(train_py: Path) -> types.CodeType:
    """The body of ``for i, batch in enumerate(train_loader)`` in ``train()``, without the rank-0 blocks
    and the step counter, compiled with train.py's file name (tracebacks point into it)."""
    tree = ast.parse(train_py.read_text(), filename=str(train_py))
    loops = [node for node in ast.walk(tree) if isinstance(node, ast.For) and isinstance(node.iter, ast.Call)
             and ast.unparse(node.iter) == "enumerate(train_loader)"]
    if len(loops) != 1:
        raise ValueError(f"{train_py}: expected one 'for ... in enumerate(train_loader)' loop, found {len(loops)}")
    body = [node for node in loops[0].body if not (_is_rank0_block(node) or _is_step_counter(node))]
    text = "\n".join(ast.unparse(node) for node in body)
    missing = [name for name in _MPSENET_STEP_CALLS if f"{name}(" not in text]
    if missing:
        raise ValueError(f"{train_py}: the training loop no longer calls {', '.join(missing)}: "
                         "this benchmark reads the step from it; check the reference's train.py")
    return compile(ast.Module(body=body, type_ignores=[]), str(train_py), "exec")


class MpsenetReferenceStep:
    """One iteration of MP-SENet's training loop as written in its train.py, with its optimizers
    (AdamW, ``h.learning_rate``, betas ``(adam_b1, adam_b2)``: train.py:65-66) and ``rank`` 0."""

    def __init__(self, train: types.ModuleType, h, generator: torch.nn.Module, discriminator: torch.nn.Module,
                 device: torch.device):
        self.code = mpsenet_step_code(Path(train.__file__))
        self.scope = dict(vars(train))
        generator, discriminator = generator.to(device).train(), discriminator.to(device).train()
        self.scope.update(
            h=h, device=device, rank=0, steps=0, generator=generator, discriminator=discriminator,
            optim_g=torch.optim.AdamW(generator.parameters(), h.learning_rate, betas=[h.adam_b1, h.adam_b2]),
            optim_d=torch.optim.AdamW(discriminator.parameters(), h.learning_rate, betas=[h.adam_b1, h.adam_b2]))
        self.device = device

    def __call__(self, clean: torch.Tensor, noisy: torch.Tensor) -> tuple[float, float]:
        self.scope["batch"] = (clean, noisy)
        with reference_context(self.device), contextlib.redirect_stdout(sys.stderr):  # its 'pesq is None!'
            exec(self.code, self.scope)  # noqa: S102 -- the reference's own loop body, read above
        disc = self.scope["loss_disc_all"]
        return float(self.scope["loss_gen_all"]), float(disc) if isinstance(disc, torch.Tensor) else float(disc)
