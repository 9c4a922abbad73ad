"""What the creative task shows in TensorBoard of one validation pair (Task.media), written by the
tracker and read back."""

import numpy as np
import pytest
import torch

from tests.core.test_tracking import accumulate
from trainer.core.config import load_config
from trainer.core.registry import build_generator
from trainer.core.task import build_task
from trainer.core.tracking import TensorBoardTracker
from trainer.data import synth
from trainer.tasks.creative import diagnostics

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_mixes_masks_and_correlations(repo_root, tmp_path):
    cfg = load_config(repo_root / "configs/creative_smoke.yaml", ["valid.num_audio_samples=1"])
    task = build_task(cfg, torch.device("cpu"), 1)
    torch.manual_seed(0)
    generator = build_generator(cfg).eval()
    inputs, targets = synth.synthetic_pairs(1, 1.0, 16000, seed=0)
    batch = {"input": inputs, "target": targets, "lengths": torch.tensor([16000]), "names": ["pair 0"],
             "scale": torch.tensor([1.0])}
    media = task.media(generator, batch)
    with torch.no_grad():
        out = generator(inputs, targets)
    assert media.sample_rate == 16000
    assert set(media.audio) == {"output"} and set(media.reference_audio) == {"input", "target"}
    np.testing.assert_array_equal(media.reference_audio["input"], inputs[0].numpy())
    assert media.audio["output"].shape == (16000,)
    assert set(media.images) == {"spectrogram_output", "mask_input", "mask_target"}
    assert set(media.reference_images) == {"spectrogram_input", "spectrogram_target"}
    frames = out["mask_input"].shape[-1]
    assert media.images["mask_input"].shape == (65, frames, 3)  # 129 channels (n_fft 256), two rows a pixel
    diag = diagnostics.creative_diagnostics(out, inputs, targets)
    assert media.scalars["corr_input"] == pytest.approx(diag["corr_input"])
    assert media.scalars["corr_target"] == pytest.approx(diag["corr_target"])
    assert media.text["alert"].startswith(diag["alert"])

    tracker = TensorBoardTracker(cfg, tmp_path, media_batches=[batch])
    tracker.start(0)
    tracker.validation(task, generator, step=5)
    tracker.close()
    acc = accumulate(tmp_path / "tensorboard")
    assert sorted(acc.Tags()["audio"]) == [f"audio/0_pair_0/{s}" for s in ("input", "output", "target")]
    assert acc.Audio("audio/0_pair_0/output")[0].sample_rate == 16000
    [mask] = acc.Images("image/0_pair_0/mask_target")
    assert (mask.width, mask.height, mask.step) == (frames, 65, 5)
    assert [e.step for e in acc.Scalars("utterance/0_pair_0/corr_target")] == [5]
