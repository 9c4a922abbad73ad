"""DNSMOS from the speechmos wheel's ONNX models, checked against speechmos.dnsmos.run on espeak-ng speech."""

import subprocess
import sys

import numpy as np
import pytest

from trainer.data.synth import babble_like_noise, mix_at_snr, synthesize_speech
from trainer.metrics import dnsmos

SR = 16000
SENTENCES = ("The birch canoe slid on the smooth planks.", "Glue the sheet to the dark blue background.",
             "It's easy to tell the depth of a well.", "These days a chicken leg is a rare dish.",
             "Rice is often served in round bowls.")

pytestmark = pytest.mark.skipif(bool(dnsmos.missing_packages()), reason=dnsmos.MISSING)


@pytest.fixture(scope="module")
def clips():
    """Real (espeak-ng) speech: a 2-3 s sentence (repeated to 9.01 s by the reference), a noisy
    ~12 s passage (several windows) and a clean one at a low level."""
    sentences = [synthesize_speech(s, SR, voice=("en-us", "en-gb")[i % 2]).astype(np.float64)
                 for i, s in enumerate(SENTENCES)]
    passage = np.concatenate(sentences)
    noisy = mix_at_snr(passage, babble_like_noise(len(passage), SR, seed=3), 5)
    clips = {"short_clean": sentences[0], "passage_noisy_5db": noisy, "passage_quiet": 0.05 * passage}
    return {name: (wave / max(1.0, np.abs(wave).max())).astype(np.float32) for name, wave in clips.items()}


@pytest.mark.slow  # librosa import (numba)
def test_mel_features_equal_librosa():
    librosa = pytest.importorskip("librosa")
    segment = (np.random.default_rng(0).standard_normal(dnsmos.WINDOW - dnsmos.HOP) * 0.1).astype(np.float32)
    expected = librosa.feature.melspectrogram(y=segment, sr=SR, n_fft=321, hop_length=160, n_mels=120)
    expected = ((librosa.power_to_db(expected, ref=np.max) + 40) / 40).T
    np.testing.assert_allclose(dnsmos.p808_features(segment[None])[0], expected, atol=1e-5)


def test_windows_follow_the_reference():
    short = np.arange(3 * SR, dtype=np.float32)
    assert dnsmos.windows(short).shape == (3, dnsmos.WINDOW)  # doubled to 12 s: windows at 0, 1, 2 s
    assert dnsmos.windows(np.zeros(int(9.5 * SR), np.float32)).shape == (1, dnsmos.WINDOW)
    # the reference cuts window i at int((i + 9.01) * 16000): from i = 7 on, float rounding makes it one
    # sample short and it is skipped; a 20 s clip has 7 windows, not 11 (kept: scores must equal theirs)
    assert dnsmos.windows(np.zeros(20 * SR, np.float32)).shape == (7, dnsmos.WINDOW)


@pytest.mark.slow  # speechmos imports librosa (numba compiles on first use)
def test_equals_speechmos_within_001_on_real_speech(clips):
    from speechmos import dnsmos as reference

    names = {"dnsmos_sig": "sig_mos", "dnsmos_bak": "bak_mos", "dnsmos_ovrl": "ovrl_mos", "dnsmos_p808": "p808_mos"}
    for name, clip in clips.items():
        ours, theirs = dnsmos.dnsmos(clip), reference.run(clip, SR)
        for key, their_key in names.items():
            assert ours[key] == pytest.approx(float(theirs[their_key]), abs=0.01), (name, key, ours, theirs)
    # a noisy clip is judged worse than the clean speech, as a listener would
    clean, noisy = dnsmos.dnsmos(clips["short_clean"]), dnsmos.dnsmos(clips["passage_noisy_5db"])
    assert noisy["dnsmos_bak"] < clean["dnsmos_bak"] and noisy["dnsmos_ovrl"] < clean["dnsmos_ovrl"]


def test_missing_packages_are_named_in_one_line(tmp_path, repo_root):
    (tmp_path / "onnxruntime.py").write_text("raise ImportError('onnxruntime is not installed')\n")
    code = "from trainer.metrics import dnsmos; print(dnsmos.missing_packages())"
    env = {"PYTHONPATH": f"{tmp_path}:{repo_root}", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=repo_root,
                          timeout=120)
    assert proc.stdout.strip() == "['onnxruntime']", proc.stderr
    assert "speechmos" in dnsmos.MISSING and "onnxruntime" in dnsmos.MISSING and "\n" not in dnsmos.MISSING
