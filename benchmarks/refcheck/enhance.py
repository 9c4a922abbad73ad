"""Imported official checkpoints through the toolkit's commands against the authors' own inference scripts.

For each model: a file in the official layout (the reference network's perturbed weights, saved as the
authors save theirs) -> ``python -m trainer.import_checkpoint`` -> ``python -m trainer.enhance`` on a
folder of 16-bit wavs, compared with what the reference repository's script writes for the same files
and weights, before its 16-bit quantisation:

* CMGAN: ``src/evaluation.py``'s ``evaluation()`` (which calls ``enhance_one_track``), run on the CPU
  under torch 2 with the stand-ins of :func:`~benchmarks.refcheck.common.torch1_on_cpu` and a
  soundfile-based ``torchaudio.load``;
* MP-SENet: ``inference.py``'s ``main()`` with its own command line (``config.json`` beside the
  checkpoint, as the script expects), ``librosa.load`` replaced by a soundfile read of the 16 kHz files.

Files are shorter than CMGAN's 16 s split and than ``trainer.enhance``'s 30 s chunk, at several levels
(our unit-RMS factor ``1 / sqrt(mean(x^2) + 1e-8)`` differs from the references' ``sqrt(T / sum(x^2))``
by the epsilon: printed per file) and lengths off the hop (MP-SENet's script writes ``(T // 100) * 100``
samples; the common prefix is compared).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from benchmarks.refcheck.cmgan import perturbed_reference_cmgan
from benchmarks.refcheck.common import (
    REPO,
    SAMPLE_RATE,
    WAVE_TOL,
    Report,
    captured_writes,
    soundfile_torchaudio,
    speech_like,
    torch1_on_cpu,
)
from benchmarks.refcheck.mpsenet import perturbed_reference_mpsenet

__all__ = ["check_enhance"]

# name -> (samples, RMS of the noisy file)
TEST_FILES = {"speech_2s.wav": (32000, 0.05), "odd_3s.wav": (48037, 0.1), "short.wav": (11111, 0.03),
              "quiet_-40dBFS.wav": (40000, 0.01), "very_quiet_-60dBFS.wav": (24000, 0.001)}


def _write_test_files(folder: Path, seed: int) -> None:
    for sub in ("noisy", "clean"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for i, (name, (samples, rms)) in enumerate(TEST_FILES.items()):
        noisy = speech_like(samples, seed + 20 + i).numpy().astype(np.float64)
        clean = speech_like(samples, seed + 20 + i, snr_db=60.0).numpy().astype(np.float64)
        gain = rms / np.sqrt(np.mean(noisy**2))
        sf.write(folder / "noisy" / name, noisy * gain, SAMPLE_RATE, subtype="PCM_16")
        sf.write(folder / "clean" / name, clean * gain, SAMPLE_RATE, subtype="PCM_16")


def _toolkit(fmt: str, official: Path, noisy_dir: Path, work: Path) -> Path:
    """import_checkpoint + enhance as a user runs them (batch 4: MP-SENet must still run one file per call)."""
    out_dir = work / f"{fmt}_toolkit"
    shutil.rmtree(out_dir, ignore_errors=True)
    converted = work / f"{fmt}.pt"
    converted.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for cmd in ([sys.executable, "-m", "trainer.import_checkpoint", "--format", fmt, str(official), "--out",
                 str(converted)],
                [sys.executable, "-m", "trainer.enhance", "--checkpoint", str(converted), "--noisy-dir", str(noisy_dir),
                 "--out-dir", str(out_dir), "--device", "cpu", "--batch-size", "4", "--no-progress"]):
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[2:4])} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    return out_dir


def _reference_cmgan(ref, official: Path, data: Path, work: Path) -> dict[str, np.ndarray]:
    evaluation = ref.evaluation
    saved_torchaudio, evaluation.torchaudio = evaluation.torchaudio, soundfile_torchaudio()
    try:
        with torch1_on_cpu(), captured_writes(evaluation) as written:
            evaluation.evaluation(str(official), str(data / "noisy"), str(data / "clean"), True,
                                  str(work / "cmgan_reference"))
    finally:
        evaluation.torchaudio = saved_torchaudio
    return written


def _reference_mpsenet(ref, official: Path, data: Path, work: Path) -> dict[str, np.ndarray]:
    shutil.copy(ref.root / "config.json", official.parent / "config.json")  # inference.py reads it from there
    argv = sys.argv
    sys.argv = ["inference.py", "--input_noisy_wavs_dir", str(data / "noisy"), "--output_dir",
                str(work / "mpsenet_reference"), "--checkpoint_file", str(official)]
    try:
        with captured_writes(ref.inference) as written:
            ref.inference.main()
    finally:
        sys.argv = argv
    return written


def _compare(report: Report, label: str, ours_dir: Path, reference: dict[str, np.ndarray], data: Path) -> None:
    for name in TEST_FILES:
        ours, rate = sf.read(ours_dir / name, dtype="float64")
        noisy, _ = sf.read(data / "noisy" / name, dtype="float32")
        ref = reference.get(name)
        if ref is None or rate != SAMPLE_RATE or len(ours) != len(noisy):
            report.equal(f"{label} {name}: written, input length and rate", (len(ours), rate),
                         (len(noisy), SAMPLE_RATE) if ref is not None else "reference wrote nothing")
            continue
        common = min(len(ref), len(ours))
        diff = float(np.max(np.abs(ours[:common] - ref[:common])))
        report.check(f"{label} {name}: |trainer.enhance - reference script|", diff, WAVE_TOL)
        energy = float(np.sum(noisy.astype(np.float64) ** 2))
        ours_scale, ref_scale = 1 / np.sqrt(energy / len(noisy) + 1e-8), np.sqrt(len(noisy) / energy)
        report.info(f"{label} {name}: peak / compared samples / unit-RMS factor rel. diff",
                    f"{np.max(np.abs(ref)):.4f} / {common} of {len(ours)} / {abs(ours_scale / ref_scale - 1):.1e}")


def check_enhance(report: Report, ref_cmgan, ref_mpsenet, seed: int, work: Path) -> None:
    print("Imported official checkpoints: trainer.enhance vs the reference inference scripts")
    data = work / "wavs"
    _write_test_files(data, seed)
    cmgan_file = work / "cmgan_official" / "ckpt"
    cmgan_file.parent.mkdir(parents=True, exist_ok=True)
    torch.save(perturbed_reference_cmgan(ref_cmgan, seed).state_dict(), cmgan_file)  # as src/best_ckpt/ckpt
    mpsenet_file = work / "mpsenet_official" / "g_best_vb"
    mpsenet_file.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"generator": perturbed_reference_mpsenet(ref_mpsenet, seed).state_dict()}, mpsenet_file)
    for label, fmt, official, run_reference, ref in (
            ("cmgan enhance", "cmgan", cmgan_file, _reference_cmgan, ref_cmgan),
            ("mpsenet enhance", "mpsenet", mpsenet_file, _reference_mpsenet, ref_mpsenet)):
        ours_dir = _toolkit(fmt, official, data / "noisy", work)
        with torch.no_grad():
            reference = run_reference(ref, official, data, work)
        _compare(report, label, ours_dir, reference, data)
    (work / "files.json").write_text(json.dumps(TEST_FILES, indent=1))
