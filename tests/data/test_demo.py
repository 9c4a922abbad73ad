"""The demo corpus: built once and atomically, speaker-held-out, usable by the loaders."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import trainer.data.demo
from trainer.core.config import load_config
from trainer.data.demo import MARKER, ensure_demo_corpus
from trainer.data.format import DataError
from trainer.data.shards import ShardIndex, build_eval_loader, build_train_loader
from trainer.data.synth import have_espeak


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return ensure_demo_corpus(tmp_path_factory.mktemp("demo") / "corpus")


def test_layout_sizes_and_speaker_split(demo):
    train, valid = ShardIndex(demo["train"]), ShardIndex(demo["valid"])
    assert (len(train), len(valid)) == (40, 64)
    test_names = sorted(os.listdir(demo["test_clean"]))
    assert len(test_names) == 8 and test_names == sorted(os.listdir(demo["test_noisy"]))
    test_speakers = {n.split("_")[0] for n in test_names}
    assert len(set(train.speakers)) == 4 and len(set(valid.speakers)) == 1 and len(test_speakers) == 1
    assert (not (set(train.speakers) & set(valid.speakers))
            and not (set(train.speakers) | set(valid.speakers)) & test_speakers)
    seconds = np.concatenate([train.length_of, valid.length_of]) / 16000
    assert seconds.min() >= 2.0 and seconds.max() <= 4.0
    info = json.loads(Path(demo["root"], MARKER).read_text())
    assert info["speech"] == ("espeak-ng" if have_espeak() else "speech-like generator (espeak-ng not installed)")
    for name in test_names:
        clean, sr = sf.read(os.path.join(demo["test_clean"], name))
        noisy, _ = sf.read(os.path.join(demo["test_noisy"], name))
        snr = 10 * np.log10(np.sum(clean**2) / np.sum((noisy - clean) ** 2))
        assert sr == 16000 and -0.1 <= snr <= 15.1


def test_second_call_reuses_the_corpus(demo):
    marker = os.path.join(demo["root"], MARKER)
    before = os.stat(marker).st_mtime_ns
    assert ensure_demo_corpus(demo["root"]) == demo
    assert os.stat(marker).st_mtime_ns == before
    with pytest.raises(DataError, match="data.sample_rate=8000: the demo corpus in .* is built at 16000 Hz"):
        ensure_demo_corpus(demo["root"], sample_rate=8000)


def test_an_older_version_is_rebuilt_in_place(tmp_path):
    import json

    from trainer.data.demo import ensure_creative_demo_corpus

    root = tmp_path / "creative"
    ensure_creative_demo_corpus(root)
    marker = root / MARKER
    info = json.loads(marker.read_text())
    marker.write_text(json.dumps({**info, "demo_version": 0}))  # as an older checkout left it
    (root / "stale.txt").write_text("from the old version")
    assert ensure_creative_demo_corpus(root)["train"] == str(root / "train")
    assert json.loads(marker.read_text())["demo_version"] == info["demo_version"]
    assert not (root / "stale.txt").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["creative"]
    marker.write_text(json.dumps({**info, "demo_version": 99}))  # a newer one is not ours to replace
    with pytest.raises(DataError, match="a demo corpus of version 99, not one this code"):
        ensure_creative_demo_corpus(root)


def test_interrupted_build_leaves_nothing(tmp_path, monkeypatch, caplog):
    real_write, calls = trainer.data.demo.write_pairs, []

    def interrupted(*args, **kwargs):  # killed after the first speaker's files were written
        if calls:
            raise KeyboardInterrupt
        calls.append(real_write(*args, **kwargs))

    monkeypatch.setattr(trainer.data.demo, "write_pairs", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ensure_demo_corpus(tmp_path / "corpus")
    assert os.listdir(tmp_path) == []
    assert ("speech from espeak-ng" if have_espeak() else "speech-like generator") in caplog.text


def test_demo_config_uses_the_corpus(demo, tmp_path, monkeypatch):
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "demo_corpus").symlink_to(demo["root"])
    monkeypatch.chdir(tmp_path)
    cfg = load_config(None, ["data.demo=true", "data.num_workers=0", "data.batch_size=4"])
    loader, sampler = build_train_loader(cfg, 0, 1)
    batch = next(iter(loader))
    assert len(sampler) == 10 and batch["noisy"].shape == (4, int(cfg.data.crop_seconds * 16000))
    assert len(build_eval_loader(None, cfg, 0, 1)) == 64


@pytest.mark.slow
def test_another_sample_rate_on_the_demo_is_one_line_exit_2(repo_root, tmp_path):
    """Issue 22 item 11: --set data.sample_rate=8000 on a demo config gave a FileExistsError traceback."""
    import subprocess
    import sys

    ensure_demo_corpus(repo_root / "logs/demo_corpus")  # the shared corpus the demo configs use, at 16 kHz
    proc = subprocess.run([sys.executable, "-m", "trainer.train", "--config", "configs/smoke.yaml", "--run-dir",
                           str(tmp_path / "run"), "--set", "data.sample_rate=8000", "--set", "train.tensorboard=false"],
                          cwd=repo_root, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "data.sample_rate=8000: the demo corpus in logs/demo_corpus is built at 16000 Hz" \
        in errors[0], proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
