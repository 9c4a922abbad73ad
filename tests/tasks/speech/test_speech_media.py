"""What the speech task shows in TensorBoard of one validation utterance (Task.media)."""

import numpy as np
import pytest
import torch

from trainer.core.config import load_config
from trainer.core.registry import build_generator
from trainer.core.task import build_task
from trainer.data.synth import SENTENCES, babble_like_noise, mix_at_snr, synthesize_speech

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_noisy_clean_enhanced_audio_at_the_original_level_and_their_spectrograms(repo_root):
    cfg = load_config(repo_root / "configs/smoke.yaml")
    task = build_task(cfg, torch.device("cpu"), 1)
    torch.manual_seed(0)
    generator = build_generator(cfg).eval()
    clean = synthesize_speech(SENTENCES[0], 16000)[:12000]
    noisy = mix_at_snr(clean, babble_like_noise(len(clean), seed=0), 5.0)
    scale, length = 2.0, 11000  # normalised by 2; the last 1000 samples are padding
    batch = {"clean": torch.tensor(clean * scale, dtype=torch.float32)[None],
             "noisy": torch.tensor(noisy * scale, dtype=torch.float32)[None],
             "lengths": torch.tensor([length]), "names": ["u0"], "scale": torch.tensor([scale])}
    try:
        media = task.media(generator, batch)
    finally:
        task.close()
    assert media.sample_rate == 16000
    assert set(media.audio) == {"enhanced"} and set(media.reference_audio) == {"noisy", "clean"}
    np.testing.assert_allclose(media.reference_audio["noisy"], noisy[:length], atol=1e-6)
    np.testing.assert_allclose(media.reference_audio["clean"], clean[:length], atol=1e-6)
    # an untrained BSRNN returns its input (mask and residual start at zero)
    np.testing.assert_allclose(media.audio["enhanced"], noisy[:length], atol=1e-3)
    frames = 1 + (length - cfg.stft.n_fft) // cfg.stft.hop_length
    assert set(media.images) == {"spectrogram_enhanced"}
    assert set(media.reference_images) == {"spectrogram_noisy", "spectrogram_clean"}
    for image in (*media.images.values(), *media.reference_images.values()):
        assert image.shape == (101, frames, 3) and image.dtype == np.uint8  # 201 bins, two rows a pixel
    # one colour scale (the noisy peak): the clean picture is darker where the noise was removed
    assert media.reference_images["spectrogram_clean"].mean() < media.reference_images["spectrogram_noisy"].mean()
