"""On-the-fly mixing: parameters a pure function of (seed, epoch, index), exact SNRs and sums,
trainer.mixtures equal to the loader, a validation set of held-out speakers and noises only, bad input."""

import json
import pickle

import numpy as np
import pytest
import soundfile as sf

from trainer.core.config import ConfigError, load_config
from trainer.data import mixer
from trainer.data.demo_mixing import reader, write_dns_tree
from trainer.data.format import DataError
from trainer.data.mixing import Corpora, build_train_loader, training_dataset
from trainer.data.mixvalid import ensure_valid_set
from trainer.data.single import prepare_single
from trainer.mixtures import main as mixtures_main


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpora")
    tree = write_dns_tree(root / "dns", 16000, num_speakers=4, per_speaker=3, num_noises=8, num_rirs=4)
    prepare_single("speech", tree / "clean_fullband", root / "speech", valid_speakers=[reader(3)], progress=False)
    prepare_single("noise", tree / "noise_fullband", root / "noise", valid_fraction=0.25, progress=False)
    prepare_single("rir", tree / "impulse_responses", root / "rir", valid_fraction=0.25, progress=False)
    return root


def overrides(root, *extra):
    return ["mixing.demo=false", f"mixing.speech={root / 'speech'}", f"mixing.noise={root / 'noise'}",
            f"mixing.rir={root / 'rir'}", f"mixing.valid_dir={root / 'valid_mix'}", "data.num_workers=0", *extra]


def config(root, *extra):
    return load_config("configs/smoke_mixing.yaml", overrides(root, *extra))


def measured_snr(clean, noisy):
    noise = noisy.astype(np.float64) - clean.astype(np.float64)
    return 10 * np.log10(np.sum(clean.astype(np.float64) ** 2) / np.sum(noise ** 2))


def test_parameters_are_a_pure_function_of_seed_epoch_and_index(corpora):
    dataset = training_dataset(config(corpora))
    clone = pickle.loads(pickle.dumps(dataset))  # what a loader worker holds
    for epoch, index in ((0, 0), (0, 7), (3, 7)):
        a, b = dataset[(epoch, index)], clone[(epoch, index)]
        assert np.array_equal(a["clean"], b["clean"]) and np.array_equal(a["noisy"], b["noisy"])
    assert not np.array_equal(dataset[(0, 7)]["noisy"], dataset[(1, 7)]["noisy"])
    assert dataset.params(0, 7) != dataset.params(0, 8)
    other_seed = training_dataset(config(corpora, "run.seed=5"))
    assert other_seed.params(0, 7) != dataset.params(0, 7)


def test_without_reverberation_noisy_is_clean_plus_noise_at_the_drawn_snr(corpora):
    dataset = training_dataset(config(corpora, "mixing.reverb_probability=0", "mixing.snr_db=[-5, 20]"))
    for index in range(12):
        clean, noisy, record = dataset.mixture(2, index)
        assert record["rir"] is None and -5 <= record["snr_db"] <= 20
        assert measured_snr(clean, noisy) == pytest.approx(record["snr_db"], abs=1e-3)
        level = 10 * np.log10(np.mean(clean.astype(np.float64) ** 2))
        assert level == pytest.approx(record["level_dbfs"], abs=1e-3)
        _, noises, _ = dataset.corpora.signals(dataset.params(2, index), dataset.crop, dataset.fade)
        summed = sum(n.astype(np.float64) / np.sqrt(np.mean(n.astype(np.float64) ** 2)) for n in noises)
        gain = np.sqrt(np.sum(clean.astype(np.float64) ** 2) / (np.sum(summed ** 2) * 10 ** (record["snr_db"] / 10)))
        assert len(noises) == len(record["noise"])
        np.testing.assert_allclose(noisy - clean, summed * gain, rtol=0, atol=2e-6)  # the added noise, nothing else


def test_short_noise_is_looped_with_a_cross_fade():
    wave = np.ones(100, dtype=np.float32)
    looped = mixer.loop_noise(wave, 30, 350, 20)
    assert len(looped) == 350 and np.allclose(looped, 1.0)  # equal signals cross-fade to themselves
    ramp = np.arange(100, dtype=np.float32)
    looped = mixer.loop_noise(ramp, 10, 300, 0)
    assert np.array_equal(looped[:90], ramp[10:]) and np.array_equal(looped[90:190], ramp)


def test_mixtures_command_writes_what_the_loader_yields(corpora, tmp_path):
    args = ["--config", "configs/smoke_mixing.yaml", *sum((["--set", o] for o in overrides(corpora)), []),
            "--split", "train", "--count", "6"]
    for name, epoch in (("a", 1), ("b", 1), ("c", 2)):
        assert mixtures_main([*args, "--epoch", str(epoch), "--out", str(tmp_path / name)]) == 0
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 14  # 6 clean, 6 noisy, params.jsonl, conditions.csv
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
    assert (tmp_path / "a/params.jsonl").read_text() != (tmp_path / "c/params.jsonl").read_text()
    records = [json.loads(line) for line in (tmp_path / "a/params.jsonl").read_text().splitlines()]
    cfg = config(corpora, "data.batch_size=2")
    loader, sampler = build_train_loader(cfg, 0, 1)
    sampler.set_epoch(1)
    seen = 0
    for batch in loader:
        for row, index in enumerate(batch["index"].tolist()):
            if index < 6:
                clean, _ = sf.read(tmp_path / "a/clean" / f"{records[index]['name']}.wav", dtype="float32")
                noisy, _ = sf.read(tmp_path / "a/noisy" / f"{records[index]['name']}.wav", dtype="float32")
                scale = batch["scale"][row].item()
                assert np.array_equal(batch["noisy"][row].numpy(), noisy * np.float32(scale))
                assert np.array_equal(batch["clean"][row].numpy(), clean * np.float32(scale))
                seen += 1
    assert seen == 6
    for record in records:
        assert cfg.mixing.snr_db[0] <= record["snr_db"] <= cfg.mixing.snr_db[1]
        if record["rir"] is None and record["clip_quantile"] is None and record["bandlimit_rate"] is None:
            clean, _ = sf.read(tmp_path / "a/clean" / f"{record['name']}.wav", dtype="float32")
            noisy, _ = sf.read(tmp_path / "a/noisy" / f"{record['name']}.wav", dtype="float32")
            assert measured_snr(clean, noisy) == pytest.approx(record["snr_db"], abs=1e-3)
    assert mixtures_main([*args, "--out", str(tmp_path / "a")]) == 2  # an existing folder is refused


def test_mixtures_conditions_break_an_evaluation_down_by_snr_band(corpora, tmp_path):
    """trainer.mixtures' conditions.csv is what trainer.evaluate --conditions reads: the noisy input scored
    against the clean target, broken down by the recorded SNR in 5 dB bands."""
    from trainer.evaluate import main as evaluate_main
    from trainer.report.stats import snr_band

    out = tmp_path / "valid"
    assert mixtures_main(["--config", "configs/smoke_mixing.yaml", *sum((["--set", o] for o in overrides(corpora)), []),
                          "--split", "valid", "--count", "4", "--out", str(out)]) == 0
    records = [json.loads(line) for line in (out / "params.jsonl").read_text().splitlines()]
    report = tmp_path / "scores.json"
    assert evaluate_main(["--clean-dir", str(out / "clean"), "--enhanced-dir", str(out / "noisy"),
                          "--conditions", str(out / "conditions.csv"), "--json", str(report), "--workers", "1",
                          "--no-progress"]) == 0
    text = report.read_text()
    for record in records:
        assert snr_band(record["snr_db"]) in text, record["snr_db"]


def test_validation_uses_held_out_speakers_and_noise_files_only(corpora):
    cfg = config(corpora)
    folder = ensure_valid_set(cfg)
    assert ensure_valid_set(cfg) == folder  # synthesised once, then reused
    from trainer.data.shards import split_dirs

    assert split_dirs(cfg) == ("", str(folder))  # what infer and the eval loaders read
    manifest = json.loads((folder / "manifest.json").read_text())
    train, valid = Corpora(cfg, "train"), Corpora(cfg, "valid")
    names = {kind: (set(train.indexes[kind][0].names), set(valid.indexes[kind][0].names))
             for kind in ("speech", "noise", "rir")}
    assert len(manifest["mixtures"]) == manifest["num_pairs"] == len(names["speech"][1])
    for record in manifest["mixtures"]:
        assert record["speech"] in names["speech"][1] and reader(3) in record["speech"]
        assert all(n in names["noise"][1] and n not in names["noise"][0] for n in record["noise"])
        assert record["rir"] is None or record["rir"] in names["rir"][1]
        assert cfg.mixing.snr_db[0] <= record["snr_db"] <= cfg.mixing.snr_db[1]
    with pytest.raises(DataError, match="holds a validation set of other corpora or settings"):
        ensure_valid_set(config(corpora, "mixing.snr_db=[1, 2]"))


@pytest.mark.parametrize("extra, message", [
    (["data.train_dir=x"], "data.train_dir: must be empty"),
    (["mixing.snr_db=[20, -5]"], "mixing.snr_db: [20.0, -5.0] is reversed"),
    (["mixing.snr_db=[0, .inf]"], "mixing.snr_db[1]: inf is not a finite number"),
    (["mixing.noise=[{path: a, weight: 0}, {path: b, weight: 0}]"], "mixing.noise: every weight is zero"),
    (["mixing.noise=[{path: a, weight: -1}]"], "mixing.noise[0].weight: -1"),
])
def test_bad_mixing_settings_are_refused_by_name(corpora, extra, message):
    with pytest.raises(ConfigError) as info:
        config(corpora, *extra)
    assert message in str(info.value)


@pytest.mark.parametrize("case, message", [
    ("noise_as_speech", "mixing.speech: "),
    ("missing", "no such folder"),
    ("short", "shorter than data.crop_seconds"),
    ("rate", "sample_rate 16000 but data.sample_rate is 8000"),
])
def test_bad_corpora_are_refused_by_name(corpora, case, message):
    extra = {"noise_as_speech": [f"mixing.speech={corpora / 'noise'}"],
             "missing": [f"mixing.speech={corpora / 'nowhere'}"],
             "short": ["data.crop_seconds=30"], "rate": ["data.sample_rate=8000"]}[case]
    with pytest.raises(DataError) as info:
        training_dataset(config(corpora, *extra))
    assert message in str(info.value) and len(str(info.value).splitlines()) == 1


def test_training_on_a_bad_corpus_exits_2_in_one_line(corpora, repo_root, tmp_path):
    import subprocess
    import sys

    sets = [a for o in overrides(corpora, f"mixing.speech={corpora / 'noise'}") for a in ("--set", o)]
    proc = subprocess.run([sys.executable, "-m", "trainer.train", "--config", "configs/smoke_mixing.yaml",
                           "--run-dir", str(tmp_path / "run"), *sets], cwd=repo_root, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if "Traceback" in line or "error" in line.lower()]
    assert len(errors) == 1 and "mixing.speech" in errors[0] and "a noise corpus where a speech one" in errors[0]
    assert not (tmp_path / "run" / "checkpoints" / "last.pt").exists()
    assert mixtures_main(["--config", "configs/smoke.yaml", "--out", str(tmp_path / "m")]) == 2
    assert not (tmp_path / "m").exists()


def test_a_corrupted_noise_shard_is_refused_by_name(corpora, tmp_path):
    import shutil

    copy = tmp_path / "noise"
    shutil.copytree(corpora / "noise", copy)
    shard = copy / "train" / "shard-00000.h5"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(DataError, match=f"{shard}: sha256 does not match the manifest"):
        training_dataset(config(corpora, f"mixing.noise={copy}"))


def test_launch_check_reports_each_mixing_corpus(corpora, tmp_path, capsys):
    from jobs.submit.preflight import _check_data

    cfg = load_config("configs/smoke_mixing.yaml", ["mixing.demo=false", f"mixing.speech={corpora / 'speech'}",
                                                    f"mixing.noise={tmp_path}", "mixing.reverb_probability=0"])
    assert not _check_data(cfg)
    out = capsys.readouterr().out
    assert f"[ok  ] mixing.speech: {corpora / 'speech'}: packed" in out
    assert f"[FAIL] mixing.noise: {tmp_path}: no manifest.json (pack it with python -m trainer.prepare --kind noise)" \
        in out
