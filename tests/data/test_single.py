"""prepare --kind speech|noise|rir: a DNS-layout tree packs per kind, split by speaker / by file, RIRs
trimmed and normalised, silent speech counted, bad input refused in one line with nothing written."""

import json

import numpy as np
import pytest
import soundfile as sf

from trainer.data.demo_mixing import reader, write_dns_tree
from trainer.data.format import DataError
from trainer.data.shards import ShardIndex
from trainer.prepare import main


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """A DNS-Challenge-like tree at 48 kHz (packed at 16 kHz): 4 readers x 2, 6 noises, 4 stereo RIRs,
    and one mostly silent speech file."""
    root = write_dns_tree(tmp_path_factory.mktemp("dns"), 48000, num_speakers=4, per_speaker=2, num_noises=6,
                          num_rirs=4)
    silent = np.zeros(48000, dtype=np.float32)
    silent[100:400] = 0.3  # 6 ms of sound in 1 s
    sf.write(root / "clean_fullband/read_speech/book_00009_chp_0001_reader_00009_0_seg_1.wav", silent, 48000)
    for path in (root / "impulse_responses").rglob("*.wav"):
        h, rate = sf.read(path, dtype="float32")
        sf.write(path, np.stack([h, 0.5 * h], axis=1), rate, subtype="FLOAT")
    return root


def manifest(folder):
    return json.loads((folder / "manifest.json").read_text())


def test_speech_is_split_by_speaker_and_silent_files_counted(tree, tmp_path):
    out = tmp_path / "speech"
    assert main(["--kind", "speech", "--in-dir", str(tree / "clean_fullband"), "--out", str(out),
                 "--valid-speakers", f"{reader(3)},reader_00009", "--no-progress"]) == 0
    train, valid = manifest(out / "train"), manifest(out / "valid")
    assert train["kind"] == valid["kind"] == "speech" and train["sample_rate"] == 16000
    assert set(train["speakers"]) == {reader(0), reader(1), reader(2)}
    assert set(valid["speakers"]) == {reader(3), "reader_00009"}
    assert valid["silent"] == ["read_speech/book_00009_chp_0001_reader_00009_0_seg_1"]
    index = ShardIndex(out / "train", kind="speech")
    assert all(n.startswith("read_speech/book_") for n in index.names) and len(index) == 6
    source, rate = sf.read(tree / "clean_fullband" / f"{index.names[0]}.wav")
    assert rate == 48000 and abs(index.length_of[0] - len(source) / 3) <= 1  # resampled once to 16 kHz

    fraction = tmp_path / "fraction"
    assert main(["--kind", "speech", "--in-dir", str(tree / "clean_fullband"), "--out", str(fraction),
                 "--valid-fraction", "0.4", "--drop-silent", "--no-progress"]) == 0
    held, kept = manifest(fraction / "valid"), manifest(fraction / "train")
    assert len(held["speakers"]) == 2 and not set(held["speakers"]) & set(kept["speakers"])
    assert manifest(fraction / "train")["dropped_silent"] + held["dropped_silent"] == \
        ["read_speech/book_00009_chp_0001_reader_00009_0_seg_1"]


def test_noise_split_by_file_and_rirs_trimmed_at_onset(tree, tmp_path):
    assert main(["--kind", "noise", "--in-dir", str(tree / "noise_fullband"), "--out", str(tmp_path / "noise"),
                 "--valid-fraction", "0.34", "--no-progress"]) == 0
    train, valid = (ShardIndex(tmp_path / "noise" / s, kind="noise") for s in ("train", "valid"))
    assert len(valid) == 2 and len(train) == 4 and not set(train.names) & set(valid.names)
    assert main(["--kind", "rir", "--in-dir", str(tree / "impulse_responses"), "--out", str(tmp_path / "rir"),
                 "--channel", "1", "--no-progress"]) == 0
    index = ShardIndex(tmp_path / "rir", kind="rir")
    import h5py

    with h5py.File(index.shard_paths[0], "r") as h5:
        for i in range(len(index)):
            h = h5["rir"][index.offset_of[i]:index.offset_of[i] + index.length_of[i]]
            assert h[0] == 1.0 and np.max(np.abs(h)) == 1.0  # onset first, direct path at 1
    with pytest.raises(DataError, match="a rir corpus where a speech one is expected"):
        ShardIndex(tmp_path / "rir", kind="speech", role="mixing.speech")


@pytest.mark.parametrize("case", ["missing", "empty", "stereo_rir", "long_rir", "fraction", "speakers_for_noise"])
def test_bad_input_is_one_line_and_writes_nothing(tree, tmp_path, capsys, case):
    (tmp_path / "empty").mkdir()
    args = {"missing": ["--kind", "noise", "--in-dir", str(tmp_path / "nowhere")],
            "empty": ["--kind", "speech", "--in-dir", str(tmp_path / "empty")],
            "stereo_rir": ["--kind", "rir", "--in-dir", str(tree / "impulse_responses")],
            "long_rir": ["--kind", "rir", "--in-dir", str(tree / "impulse_responses"), "--channel", "0",
                         "--max-rir-seconds", "0.1"],
            "fraction": ["--kind", "noise", "--in-dir", str(tree / "noise_fullband"), "--valid-fraction", "0.99"],
            "speakers_for_noise": ["--kind", "noise", "--in-dir", str(tree / "noise_fullband"),
                                   "--valid-speakers", "x"]}[case]
    out = tmp_path / "out"
    assert main([*args, "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    expected = {"missing": "nowhere: not a folder", "empty": "no audio files", "stereo_rir": "2 channels",
                "long_rir": "longer than --max-rir-seconds 0.1", "fraction": "--valid-fraction 0.99",
                "speakers_for_noise": "only for --kind speech"}[case]
    assert expected in err
    assert not list(out.rglob("manifest.json")) and not list(out.rglob("*.h5"))


def test_manifest_versions_and_kinds_are_checked():
    from trainer.data.format import check_manifest

    shard = {"file": "shard-00000.h5", "num_pairs": 1, "num_bytes": 10, "sha256": "0" * 64}
    paired_v1 = {"format_version": 1, "sample_rate": 16000, "signals": ["clean", "noisy"], "shards": [shard]}
    check_manifest(paired_v1, "m.json")  # datasets packed before kinds existed stay readable
    check_manifest({**paired_v1, "format_version": 2, "kind": "noise", "signals": ["noise"]}, "m.json")
    for bad, message in (({**paired_v1, "format_version": 3}, "format_version 3"),
                         ({**paired_v1, "format_version": 2, "kind": "music"}, "kind: 'music'"),
                         ({**paired_v1, "format_version": 2, "kind": "speech"}, "1 signal name(s) (kind speech)")):
        with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
            check_manifest(bad, "m.json")
