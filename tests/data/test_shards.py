"""Loaders over real shards: coverage across ranks x workers, exact resume, crops, eval split."""

import numpy as np
import pytest
import torch

from trainer.core.config import load_config
from trainer.data.demo import write_pairs
from trainer.data.format import DataError
from trainer.data.pack import prepare
from trainer.data.sampler import ResumableBatchSampler, crop_offset
from trainer.data.shards import ShardDataset, ShardIndex, build_eval_loader, build_train_loader

SENTENCES = ("The birch canoe slid on the smooth planks.", "Rice is often served in round bowls.",
             "A rod is used to catch pink salmon.")
SPEAKERS = ("p226", "p232", "p257", "p287")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    for seed, speaker in enumerate(SPEAKERS):
        write_pairs(root / "wav", "en-gb", SENTENCES, 16000, seed, speaker=speaker)
    write_pairs(root / "wav", "en-us", ("Six.",), 16000, 9, speaker="p300")  # shorter than a 2 s crop
    prepare(root / "wav" / "clean", root / "wav" / "noisy", root, valid_speakers=["p287"], shard_size_mb=0.15,
            progress=False)
    prepare(root / "wav" / "clean", root / "wav" / "noisy", root / "creative", signals=("target", "input"),
            shard_size_mb=0.15, progress=False)
    return root


def config(corpus, *overrides):
    return load_config(None, [f"data.train_dir={corpus / 'train'}", f"data.valid_dir={corpus / 'valid'}",
                              "data.batch_size=2", "data.num_workers=0", *overrides])


def collect(loader):
    return [{k: v.clone() if torch.is_tensor(v) else v for k, v in batch.items()} for batch in loader]


def test_sampler_ranks_cover_every_item_once_with_equal_lengths():
    for num_items, drop_last in ((24, True), (25, True), (25, False), (3, False)):
        samplers = [ResumableBatchSampler(num_items, 3, r, 2, seed=7, drop_last=drop_last) for r in range(2)]
        for s in samplers:
            s.set_epoch(5)
        batches = [list(s) for s in samplers]
        assert len(batches[0]) == len(batches[1]) == len(samplers[0]) == len(samplers[1])
        seen = [i for rank in batches for batch in rank for i in batch]
        if drop_last:
            assert len(seen) == len(set(seen)) == num_items // 6 * 6
        else:
            assert set(seen) == set(range(num_items)) and len(seen) == len(samplers[0]) * 6
    one = ResumableBatchSampler(24, 3, 0, 1, seed=7)
    one.set_epoch(1)
    first = [i for b in one for i in b]
    one.set_epoch(2)
    assert sorted(first) == list(range(24)) and first != [i for b in one for i in b]


def test_sampler_resumes_mid_epoch_exactly_and_handles_world_size_changes():
    full = {}
    for rank in range(4):
        s = ResumableBatchSampler(50, 2, rank, 4, seed=3)
        s.set_epoch(2)
        full[rank] = list(s)
        resumed = ResumableBatchSampler(50, 2, rank, 4, seed=3)
        assert resumed.load_state_dict(s.state_dict(batches_done=3)) == 3
        resumed.set_epoch(2)  # the loop calls this again for the resumed epoch
        assert list(resumed) == full[rank][3:]
        assert list(resumed) == full[rank]  # the resume applies to one pass only
    stream = [i for b in range(len(full[0])) for r in range(4) for i in full[r][b]]
    state = ResumableBatchSampler(50, 2, 0, 4, seed=3).state_dict(0) | {"epoch": 2, "batches_done": 3}
    halves = [ResumableBatchSampler(50, 2, r, 2, seed=3) for r in range(2)]
    assert [h.load_state_dict(state) for h in halves] == [6, 6]  # 4 GPUs -> 2: 3 x 8 items = 6 x 4 items
    rest = [list(h) for h in halves]
    assert [i for b in range(len(rest[0])) for r in range(2) for i in rest[r][b]] == stream[24:]
    with pytest.raises(DataError, match="cannot continue epoch 2 mid-way.*resume with world_size 4"):
        ResumableBatchSampler(50, 2, 0, 5, seed=3).load_state_dict(state)
    with pytest.raises(DataError, match="num_items=50 in the checkpoint but 51"):
        ResumableBatchSampler(51, 2, 0, 4, seed=3).load_state_dict(state)
    ended = ResumableBatchSampler(50, 2, 0, 3, seed=3)
    ended.load_state_dict(state | {"batches_done": 6})  # epoch complete: nothing left, any world size
    assert list(ended) == []


def test_two_ranks_two_workers_read_every_utterance_once_per_epoch(corpus):
    cfg = config(corpus, "data.batch_size=1", "data.num_workers=2")
    names, indices = [], []
    for rank in range(2):
        loader, sampler = build_train_loader(cfg, rank, 2)
        sampler.set_epoch(3)
        for batch in loader:
            names += batch["names"]
            indices += batch["index"].tolist()
        assert loader.dataset.files_opened == 0  # h5py files are opened in the workers, never before the fork
    num_train = ShardIndex(corpus / "train").manifest["num_pairs"]
    assert num_train == 10 and sorted(indices) == list(range(num_train))
    assert len(set(names)) == num_train and not any(n.startswith("p287") for n in names)


def test_resumed_batches_are_bit_exact_whatever_the_worker_count(corpus):
    loader, sampler = build_train_loader(config(corpus, "data.num_workers=0"), 0, 1)
    sampler.set_epoch(4)
    reference = collect(loader)
    assert len(reference) == 5
    resumed_loader, resumed = build_train_loader(config(corpus, "data.num_workers=2"), 0, 1)
    resumed.load_state_dict(sampler.state_dict(batches_done=2))
    resumed.set_epoch(4)
    got = collect(resumed_loader)
    assert len(got) == 3
    for want, have in zip(reference[2:], got, strict=True):
        assert want["names"] == have["names"]
        for key in ("clean", "noisy", "lengths", "index", "scale"):
            assert torch.equal(want[key], have[key]), key


def test_training_crops_pad_and_normalise(corpus):
    index = ShardIndex(corpus / "train")
    crop = 32000
    dataset = ShardDataset(index, train=True, crop_samples=crop, seed=1, normalize=True)
    raw = ShardDataset(index, train=False, crop_samples=None, normalize=False)
    short = index.names.index("p300_00")
    assert index.length_of[short] < crop
    item = dataset[(0, short)]
    length = int(index.length_of[short])
    assert item["length"] == length and item["clean"].shape == (crop,)
    assert not item["clean"][length:].any() and not item["noisy"][length:].any()
    assert np.sqrt(np.mean(item["noisy"][:length].astype(np.float64) ** 2)) == pytest.approx(1.0, rel=1e-4)
    assert np.allclose(item["clean"][:length], raw[short]["clean"] * item["scale"], rtol=1e-6)
    long = int(np.argmax(index.length_of))
    starts = {crop_offset(1, epoch, long, int(index.length_of[long]), crop) for epoch in range(6)}
    assert len(starts) > 1  # a new crop each epoch ...
    start = crop_offset(1, 3, long, int(index.length_of[long]), crop)
    item = ShardDataset(index, train=True, crop_samples=crop, seed=1, normalize=False)[(3, long)]
    assert np.array_equal(item["noisy"], raw[long]["noisy"][start:start + crop])  # ... aligned in both signals
    assert np.array_equal(item["clean"], raw[long]["clean"][start:start + crop])


def test_eval_loader_is_disjoint_without_duplicates_and_deterministic(corpus):
    cfg = config(corpus, "data.normalize=false", "data.num_workers=1")
    index = ShardIndex(corpus / "creative")
    assert len(index) == 13
    per_rank = [collect(build_eval_loader(corpus / "train", cfg, rank, 3)) for rank in range(3)]
    names = [b["names"][0] for rank in per_rank for b in rank]
    assert sorted(names) == sorted(ShardIndex(corpus / "train").names) and len(names) == 10
    assert [len(r) for r in per_rank] == [4, 3, 3]
    whole = per_rank[0][0]
    assert whole["clean"].shape == (1, int(whole["lengths"][0]))
    cropped = [collect(build_eval_loader(None, cfg, 0, 1, max_seconds=1.0, max_utterances=2)) for _ in range(2)]
    assert [b["names"] for b in cropped[0]] == [["p287_00"], ["p287_02"]]
    for a, b in zip(*cropped, strict=True):
        assert a["noisy"].shape == (1, 16000) and torch.equal(a["noisy"], b["noisy"])


def test_creative_signals_and_shuffled_targets(corpus):
    cfg = config(corpus, f"data.train_dir={corpus / 'creative'}", "data.shuffle_targets=true",
                 "data.normalize=false", "data.batch_size=13")
    loader, sampler = build_train_loader(cfg, 0, 1)
    epochs = []
    for epoch in (0, 1, 1):
        sampler.set_epoch(epoch)
        (batch,) = collect(loader)
        assert {"input", "target"} <= set(batch) and "clean" not in batch
        epochs.append(batch)
    assert torch.equal(epochs[1]["target"], epochs[2]["target"])  # a pure function of (seed, epoch)
    aligned, _ = build_train_loader(config(corpus, f"data.train_dir={corpus / 'creative'}",
                                           "data.normalize=false", "data.batch_size=13"), 0, 1)
    _.set_epoch(1)
    (plain,) = collect(aligned)
    assert torch.equal(plain["input"], epochs[1]["input"]) and not torch.equal(plain["target"], epochs[1]["target"])


def test_config_sample_rate_mismatch_and_missing_manifest(corpus, tmp_path):
    with pytest.raises(DataError, match="sample_rate 16000 but data.sample_rate is 8000"):
        build_train_loader(config(corpus, "data.sample_rate=8000"), 0, 1)
    with pytest.raises(DataError, match="manifest.json: not found"):
        build_eval_loader(tmp_path, config(corpus), 0, 1)
    with pytest.raises(DataError, match="fewer than data.batch_size x world_size"):
        build_train_loader(config(corpus, "data.batch_size=6"), 0, 2)


def test_worker_errors_surface_as_one_line_naming_the_shard(corpus, tmp_path):
    import shutil

    copy = tmp_path / "train"
    shutil.copytree(corpus / "train", copy)
    loader, sampler = build_train_loader(config(corpus, f"data.train_dir={copy}", "data.num_workers=2"), 0, 1)
    for shard in copy.glob("shard-*.h5"):
        shard.write_bytes(shard.read_bytes()[:2048])
    with pytest.raises(DataError) as err:
        collect(loader)
    message = str(err.value)
    assert len(message.splitlines()) == 1 and "shard-0000" in message and "cannot open shard" in message


def test_process_with_live_workers_exits(corpus, repo_root):
    """The workers ignore SIGTERM (SLURM); exiting with a loader still alive must not hang."""
    import subprocess
    import sys

    script = ("import sys\nfrom trainer.core.config import load_config\n"
              "from trainer.data.shards import build_train_loader\n"
              f"cfg = load_config(None, ['data.train_dir={corpus / 'train'}', 'data.valid_dir={corpus / 'valid'}', "
              "'data.batch_size=2', 'data.num_workers=2'])\n"
              "loader, sampler = build_train_loader(cfg, 0, 1)\nnext(iter(loader))\nprint('one batch')\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=repo_root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "one batch" in proc.stdout, proc.stderr
