"""prepare: exact round trip, speaker split, resumable packing, and every bad input of issue 3."""

import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as taf

from trainer.data import pack as prep
from trainer.data.demo import write_pairs
from trainer.data.format import DataError, sha256_file
from trainer.data.pack import prepare
from trainer.data.shards import ShardDataset, ShardIndex
from trainer.prepare import main

SHORT = ("The birch canoe slid on the smooth planks.", "Rice is often served in round bowls.",
         "Four hours of steady work faced us.")


def corpus(root, speakers=("p226", "p287", "p232"), sample_rate=16000, subtype="PCM_16"):
    for seed, speaker in enumerate(speakers):
        write_pairs(root, "en-us", SHORT, sample_rate, seed, speaker=speaker, subtype=subtype)
    return root / "clean", root / "noisy"


def read_all(split_dir):
    """name -> (clean, noisy) exactly as stored, through the training reader."""
    index = ShardIndex(split_dir)
    dataset = ShardDataset(index, train=False, crop_samples=None, normalize=False)
    return {index.names[i]: (dataset[i]["clean"], dataset[i]["noisy"]) for i in range(len(dataset))}


def listing(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_round_trip_is_exact_and_manifest_complete(tmp_path):
    clean_dir, noisy_dir = corpus(tmp_path / "wav")
    result = prepare(clean_dir, noisy_dir, tmp_path / "out", shard_size_mb=0.1, progress=False)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest == result["all"]
    assert manifest["num_pairs"] == 9 and manifest["signals"] == ["clean", "noisy"]
    assert manifest["num_shards"] > 1 and sum(s["num_pairs"] for s in manifest["shards"]) == 9
    assert manifest["speakers"] == {"p226": 3, "p232": 3, "p287": 3}
    stored = read_all(tmp_path / "out")
    total = 0
    for path in sorted(clean_dir.glob("*.wav")):
        clean, _ = sf.read(path, dtype="float32")
        noisy, _ = sf.read(noisy_dir / path.name, dtype="float32")
        got_clean, got_noisy = stored[path.stem]
        assert np.array_equal(got_clean, clean) and np.array_equal(got_noisy, noisy)
        total += len(clean)
    assert manifest["total_seconds"] == pytest.approx(total / 16000, abs=1e-3)
    for shard in manifest["shards"]:
        assert shard["sha256"] == sha256_file(tmp_path / "out" / shard["file"])


def test_resamples_both_signals_identically(tmp_path):
    clean_dir, noisy_dir = corpus(tmp_path / "wav", speakers=("p226",), sample_rate=48000, subtype="FLOAT")
    prepare(clean_dir, noisy_dir, tmp_path / "out", sample_rate=16000, progress=False)
    stored = read_all(tmp_path / "out")
    for path in clean_dir.glob("*.wav"):
        pair = np.stack([sf.read(d / path.name, dtype="float32")[0] for d in (clean_dir, noisy_dir)])
        want = taf.resample(torch.from_numpy(pair), 48000, 16000).numpy()
        assert len(stored[path.stem][0]) == int(np.ceil(pair.shape[1] / 3))
        assert np.array_equal(stored[path.stem][0], want[0]) and np.array_equal(stored[path.stem][1], want[1])


def test_speaker_split_and_unknown_speaker(tmp_path):
    clean_dir, noisy_dir = corpus(tmp_path / "wav")
    out = tmp_path / "out"
    result = prepare(clean_dir, noisy_dir, out, valid_speakers=["p287"], progress=False)
    assert set(result["train"]["speakers"]) == {"p226", "p232"} and set(result["valid"]["speakers"]) == {"p287"}
    train, valid = read_all(out / "train"), read_all(out / "valid")
    assert sorted(valid) == ["p287_00", "p287_01", "p287_02"] and len(train) == 6 and not set(train) & set(valid)
    assert json.loads((out / "valid" / "manifest.json").read_text())["split"] == "valid"
    with pytest.raises(DataError, match="no files for speaker 'p999'.*p226, p232, p287"):
        prepare(clean_dir, noisy_dir, tmp_path / "out2", valid_speakers=["p999"], progress=False)
    # a custom pattern: the speaker is the first group
    result = prepare(clean_dir, noisy_dir, tmp_path / "out3", valid_speakers=["8"], speaker_pattern=r"^p\d(\d)",
                     progress=False)
    assert result["valid"]["speakers"] == {"8": 3} and result["train"]["speakers"] == {"2": 3, "3": 3}
    with pytest.raises(DataError, match="leaves no training pairs"):
        prepare(clean_dir, noisy_dir, tmp_path / "out4", valid_speakers=["p226", "p232", "p287"], progress=False)


def test_creative_variant_records_signal_names(tmp_path):
    clean_dir, noisy_dir = corpus(tmp_path / "wav", speakers=("a",))
    code = main(["--target-dir", str(clean_dir), "--input-dir", str(noisy_dir), "--out", str(tmp_path / "out"),
                 "--no-progress", "--workers", "1"])
    assert code == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["signals"] == ["target", "input"]
    with h5py.File(tmp_path / "out" / "shard-00000.h5") as h5:
        assert {"target", "input", "names", "lengths", "offsets"} <= set(h5)


def run_cli(*args):
    proc = subprocess.run([sys.executable, "-m", "trainer.prepare", *map(str, args), "--no-progress"],
                          capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stderr.strip()


def test_cli_error_is_one_line_exit_2_and_writes_nothing(tmp_path):
    clean_dir, noisy_dir = corpus(tmp_path / "wav", speakers=("p226",))
    (noisy_dir / "p226_01.wav").unlink()
    code, err = run_cli("--clean-dir", clean_dir, "--noisy-dir", noisy_dir, "--out", tmp_path / "out")
    assert code == 2 and len(err.splitlines()) == 1, err
    assert str(clean_dir / "p226_01.wav") in err and "no partner" in err
    assert not (tmp_path / "out").exists()


@pytest.fixture
def pair_dirs(tmp_path):
    clean_dir, noisy_dir = corpus(tmp_path / "wav", speakers=("p226",))
    return clean_dir, noisy_dir, tmp_path / "out"


def fails(capsys, clean_dir, noisy_dir, out, *extra):
    code = main(["--clean-dir", str(clean_dir), "--noisy-dir", str(noisy_dir), "--out", str(out),
                 "--no-progress", "--workers", "1", *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and len(err.splitlines()) == 1, err
    assert not (out / "manifest.json").exists() and not list(out.glob(".*tmp"))
    return err


def test_sample_rate_mismatch_in_pair(pair_dirs, capsys):
    clean_dir, noisy_dir, out = pair_dirs
    wave, _ = sf.read(noisy_dir / "p226_02.wav")
    sf.write(noisy_dir / "p226_02.wav", wave, 8000)
    err = fails(capsys, clean_dir, noisy_dir, out)
    assert str(noisy_dir / "p226_02.wav") in err and "8000 Hz" in err and "16000 Hz" in err
    assert not out.exists()


def test_length_mismatch_beyond_tolerance_but_small_differences_are_trimmed(pair_dirs, capsys):
    clean_dir, noisy_dir, out = pair_dirs
    wave, sr = sf.read(noisy_dir / "p226_00.wav", dtype="float32")
    sf.write(noisy_dir / "p226_00.wav", wave[:-800], sr)  # 50 ms shorter
    err = fails(capsys, clean_dir, noisy_dir, out)
    assert str(noisy_dir / "p226_00.wav") in err and "length-tolerance" in err and not out.exists()
    sf.write(noisy_dir / "p226_00.wav", wave[:-80], sr)  # 5 ms: within the default 10 ms
    assert main(["--clean-dir", str(clean_dir), "--noisy-dir", str(noisy_dir), "--out", str(out),
                 "--no-progress"]) == 0
    clean, noisy = read_all(out)["p226_00"]
    assert len(clean) == len(noisy) == len(wave) - 80


def test_nan_or_inf_samples(pair_dirs, capsys):
    clean_dir, noisy_dir, out = pair_dirs
    wave, sr = sf.read(clean_dir / "p226_01.wav", dtype="float32")
    wave[1234] = np.nan
    wave[2000] = np.inf
    sf.write(clean_dir / "p226_01.wav", wave, sr, subtype="FLOAT")
    err = fails(capsys, clean_dir, noisy_dir, out)
    assert str(clean_dir / "p226_01.wav") in err and "NaN/Inf" in err and "sample 1234" in err
    assert not list(out.glob("shard-*")) and not list(out.glob(".*"))


@pytest.mark.parametrize("damage", ["garbage", "zero_bytes", "no_samples"])
def test_unreadable_or_empty_file(pair_dirs, capsys, damage):
    clean_dir, noisy_dir, out = pair_dirs
    bad = noisy_dir / "p226_01.wav"
    if damage == "garbage":
        bad.write_bytes(b"this is not audio" * 10)
    elif damage == "zero_bytes":
        bad.write_bytes(b"")
    else:
        sf.write(bad, np.zeros(0, dtype=np.float32), 16000)
    err = fails(capsys, clean_dir, noisy_dir, out)
    assert str(bad) in err and ("unreadable" in err or "empty" in err) and not out.exists()


def test_multichannel_needs_a_channel_choice(pair_dirs, capsys):
    clean_dir, noisy_dir, out = pair_dirs
    for folder in (clean_dir, noisy_dir):
        for path in folder.glob("*.wav"):
            wave, sr = sf.read(path, dtype="float32")
            sf.write(path, np.stack([0.5 * wave, wave], axis=1), sr, subtype="FLOAT")
    err = fails(capsys, clean_dir, noisy_dir, out)
    assert "2 channels" in err and "--channel" in err and str(clean_dir) in err
    err = fails(capsys, clean_dir, noisy_dir, out, "--channel", "2")
    assert "--channel 2" in err
    assert main(["--clean-dir", str(clean_dir), "--noisy-dir", str(noisy_dir), "--out", str(out),
                 "--channel", "1", "--no-progress"]) == 0
    want, _ = sf.read(clean_dir / "p226_00.wav", dtype="float32")
    assert np.array_equal(read_all(out)["p226_00"][0], want[:, 1])


def test_silent_file_warned_then_kept_or_dropped(pair_dirs, caplog):
    clean_dir, noisy_dir, out = pair_dirs
    sf.write(clean_dir / "p226_02.wav", np.zeros(sf.info(clean_dir / "p226_02.wav").frames), 16000)
    kept = prepare(clean_dir, noisy_dir, out, progress=False)["all"]
    assert ("1 silent pair(s) kept" in caplog.text and "p226_02" in caplog.text and kept["silent"] == ["p226_02"]
            and kept["num_pairs"] == 3)
    dropped = prepare(clean_dir, noisy_dir, out, drop_silent=True, progress=False)["all"]
    assert dropped["dropped_silent"] == ["p226_02"] and dropped["num_pairs"] == 2
    assert "p226_02" not in read_all(out) and "1 silent pair(s) dropped" in caplog.text


def test_rerun_after_crash_skips_complete_shards(tmp_path, monkeypatch, caplog):
    clean_dir, noisy_dir = corpus(tmp_path / "wav")
    out = tmp_path / "out"
    real_pack = prep.pack_shard

    def crash_on_third(path, *args):
        if path.name == "shard-00002.h5":
            path.with_name(f".{path.name}.999.tmp").write_bytes(b"half")  # what a killed writer leaves
            raise KeyboardInterrupt
        return real_pack(path, *args)

    monkeypatch.setattr(prep, "pack_shard", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        prepare(clean_dir, noisy_dir, out, shard_size_mb=0.1, workers=1, progress=False)
    assert not (out / "manifest.json").exists() and not list(out.glob("shard-*.h5"))
    # complete shards wait under hidden staged names that carry their sha256
    done = {p.name.split(".h5.")[0][1:] + ".h5": (p.stat().st_ino, p.stat().st_mtime_ns)
            for p in out.glob(".shard-*.staged")}
    assert set(done) == {"shard-00000.h5", "shard-00001.h5"}
    monkeypatch.setattr(prep, "pack_shard", real_pack)
    manifest = prepare(clean_dir, noisy_dir, out, shard_size_mb=0.1, workers=1, progress=False)["all"]
    assert f"2 of {manifest['num_shards']} shard(s) already complete, skipped" in caplog.text
    for name, stamp in done.items():
        assert (out / name).stat().st_ino == stamp[0] and (out / name).stat().st_mtime_ns == stamp[1]
    assert not list(out.glob(".*")) and manifest["num_pairs"] == 9 and len(read_all(out)) == 9
    # a changed source file invalidates exactly its shard
    first = json.loads((out / "manifest.json").read_text())["shards"]
    os.utime(clean_dir / "p287_02.wav", ns=(1, 1))
    second = prepare(clean_dir, noisy_dir, out, shard_size_mb=0.1, workers=1, progress=False)["all"]["shards"]
    assert [a["sha256"] == b["sha256"] for a, b in zip(first, second, strict=True)].count(False) == 1


@pytest.fixture
def packed(tmp_path):
    clean_dir, noisy_dir = corpus(tmp_path / "wav", speakers=("p226", "p287"))
    prepare(clean_dir, noisy_dir, tmp_path / "out", shard_size_mb=0.1, progress=False)
    return tmp_path / "out"


def test_manifest_checksum_mismatch(packed):
    manifest = json.loads((packed / "manifest.json").read_text())
    manifest["shards"][1]["sha256"] = "0" * 64
    (packed / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="shard-00001.h5: sha256 does not match the manifest"):
        ShardIndex(packed)
    ShardIndex(packed, verify=False)  # the size check alone passes


def test_corrupted_shard_is_an_error_at_read_time_naming_it(packed):
    index = ShardIndex(packed)
    dataset = ShardDataset(index, train=False, crop_samples=None, normalize=False)
    shard = packed / "shard-00001.h5"
    victim = int(np.flatnonzero(index.shard_of == 1)[0])
    with h5py.File(shard) as h5:  # flip bytes inside the first data chunk of the utterance
        where = h5["noisy"].id.get_chunk_info(0).byte_offset + 1000
    with open(shard, "r+b") as fh:
        fh.seek(where)
        fh.write(bytes(b ^ 0xFF for b in fh.read(16)))
    with pytest.raises(DataError, match=f"{shard}: cannot read utterance '{index.names[victim]}'"):
        dataset[victim]
    with pytest.raises(DataError, match="shard-00001.h5: sha256 does not match"):
        ShardIndex(packed)


def test_truncated_shard_is_an_error_naming_it(packed):
    index = ShardIndex(packed)
    dataset = ShardDataset(index, train=False, crop_samples=None, normalize=False)
    shard = packed / "shard-00000.h5"
    os.truncate(shard, shard.stat().st_size // 2)
    with pytest.raises(DataError, match=f"{shard}: cannot open shard"):
        dataset[0]
    with pytest.raises(DataError, match="shard-00000.h5: .* bytes but the manifest says .*truncated"):
        ShardIndex(packed)


def test_cli_needs_exactly_one_pair_of_folders(tmp_path, capsys):
    for argv in (["--clean-dir", "a"], ["--clean-dir", "a", "--noisy-dir", "b", "--input-dir", "c"], []):
        with pytest.raises(SystemExit) as exit_info:
            main([*argv, "--out", str(tmp_path / "out")])
        assert exit_info.value.code == 2
        assert "give either --clean-dir and --noisy-dir, or --target-dir and --input-dir" in capsys.readouterr().err
    assert main(["--clean-dir", str(tmp_path / "nope"), "--noisy-dir", str(tmp_path), "--out",
                 str(tmp_path / "out")]) == 2
    assert f"{tmp_path / 'nope'}: not a folder" in capsys.readouterr().err


# ---------------------------------------------------------------- trust: re-runs verify, failures keep the old dataset

def _flip(path, offset, value=None):
    with open(path, "r+b") as fh:
        fh.seek(offset)
        old = fh.read(1)[0]
        fh.seek(offset)
        fh.write(bytes([old ^ 0xFF if value is None else value]))


def test_rerun_repacks_a_corrupted_shard_instead_of_laundering_it(packed, caplog):
    """Issue item 3: a re-run checks each reused shard against the manifest's sha256."""
    wav = packed.parent / "wav"
    before = read_all(packed)
    shard = packed / "shard-00000.h5"
    with h5py.File(shard) as h5:
        where = h5["clean"].id.get_chunk_info(0).byte_offset + 100
    _flip(shard, where)
    manifest = prepare(wav / "clean", wav / "noisy", packed, shard_size_mb=0.1, progress=False)["all"]
    assert "shard-00000.h5: does not match its sha256 in manifest.json" in caplog.text
    assert manifest["shards"][0]["sha256"] == sha256_file(shard)
    after = read_all(packed)
    assert after.keys() == before.keys()
    assert all(np.array_equal(after[k][0], before[k][0]) and np.array_equal(after[k][1], before[k][1]) for k in after)


def test_failed_rerun_keeps_the_previous_dataset_usable(packed, capsys):
    """Issue item 3: a re-run that fails (a NaN file added) leaves the old manifest and shards alone."""
    wav = packed.parent / "wav"
    before = read_all(packed)
    old_manifest = (packed / "manifest.json").read_text()
    wave, sr = sf.read(wav / "clean" / "p226_01.wav", dtype="float32")
    wave[10] = np.nan
    sf.write(wav / "clean" / "p226_99.wav", wave, sr, subtype="FLOAT")
    sf.write(wav / "noisy" / "p226_99.wav", wave * 0, sr)
    assert main(["--clean-dir", str(wav / "clean"), "--noisy-dir", str(wav / "noisy"), "--out", str(packed),
                 "--shard-size-mb", "0.1", "--no-progress"]) == 2
    assert "p226_99.wav" in capsys.readouterr().err
    assert (packed / "manifest.json").read_text() == old_manifest
    after = read_all(packed)  # checksums verified against the old manifest
    assert after.keys() == before.keys()
    assert all(np.array_equal(after[k][0], before[k][0]) for k in after)
    # the fixed input then packs, reusing what the failed run already packed and verified
    (wav / "clean" / "p226_99.wav").unlink()
    (wav / "noisy" / "p226_99.wav").unlink()
    manifest = prepare(wav / "clean", wav / "noisy", packed, shard_size_mb=0.1, progress=False)["all"]
    assert manifest["num_pairs"] == 6 and not list(packed.glob(".*"))


@pytest.mark.parametrize("edit, named", [
    (lambda m: m.pop("sample_rate"), "sample_rate"),
    (lambda m: m["shards"][0].pop("num_bytes"), "num_bytes"),
    (lambda m: m["shards"][1].update(num_bytes="12k"), "num_bytes"),
    (lambda m: m.update(sample_rate="16 kHz"), "sample_rate"),
    (lambda m: m["shards"][0].update(sha256=None), "sha256"),
    (lambda m: m["shards"][0].update(file="../../etc/passwd"), "file"),
    (lambda m: m.update(signals=["clean"]), "signals"),
    (lambda m: m.update(shards={"a": 1}), "shards"),
])
def test_malformed_manifest_is_one_line_naming_the_key(packed, edit, named):
    """Issue item 9: a manifest missing a key, with a non-numeric value, or of the wrong shape."""
    path = packed / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=rf"manifest\.json: .*{named}") as err:
        ShardIndex(packed)
    assert "\n" not in str(err.value)


def test_manifest_that_is_a_json_list_or_not_utf8(packed):
    path = packed / "manifest.json"
    path.write_text("[1, 2, 3]\n")
    with pytest.raises(DataError, match=r"manifest\.json: .*list"):
        ShardIndex(packed)
    path.write_bytes(b"\xff\xfe{}")
    with pytest.raises(DataError, match=r"manifest\.json: "):
        ShardIndex(packed)


@pytest.mark.parametrize("dataset", ["lengths", "offsets"])
def test_flipped_index_bytes_are_refused_without_checksums(packed, dataset):
    """Issue item 9: bytes flipped in a shard's lengths/offsets with data.verify_checksums false."""
    shard = packed / "shard-00001.h5"
    with h5py.File(shard) as h5:
        where = h5[dataset].id.get_offset() + 8 + 1  # the second entry's second byte
    _flip(shard, where)
    with pytest.raises(DataError, match=rf"shard-00001\.h5: .*{dataset}") as err:
        index = ShardIndex(packed, verify=False)
        dataset_ = ShardDataset(index, train=False, crop_samples=None, normalize=False)
        for i in range(len(dataset_)):
            dataset_[i]
    assert "\n" not in str(err.value)
