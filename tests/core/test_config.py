import subprocess
import sys

import pytest
import yaml

from trainer.core.config import Config, ConfigError, load_config, save_config
from trainer.core.settings import describe, parse_override


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_presets_load_and_differ_only_where_written(repo_root):
    balanced = load_config(repo_root / "configs/se_balanced.yaml")
    cmgan = load_config(repo_root / "configs/se_cmgan.yaml")
    assert (balanced.loss.w_ri, balanced.loss.w_mag, balanced.loss.w_time,
            balanced.loss.w_gan) == (0.45, 0.45, 0.10, 0.30)
    assert (balanced.loss.gan_start_fraction, balanced.loss.gan_ramp_epochs, balanced.train.epochs) == (0.6, 20, 250)
    assert (cmgan.loss.w_ri, cmgan.loss.w_mag, cmgan.loss.w_time, cmgan.loss.w_gan) == (0.1, 0.9, 0.2, 0.05)
    assert cmgan.optim.disc_lr_ratio == 2.0 and cmgan.loss.gan_start_fraction == 0.0
    assert balanced.stft == cmgan.stft  # both inherit base.yaml
    assert load_config(repo_root / "configs/smoke.yaml").data.demo is True


def test_unknown_key_names_it_and_lists_valid_keys(tmp_path):
    path = write(tmp_path, "c.yaml", "data:\n  demo: true\n  batchsize: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert "data.batchsize" in msg and "batch_size" in msg and "crop_seconds" in msg and str(path) in msg


def test_unknown_section(tmp_path):
    with pytest.raises(ConfigError, match="unknown key trian; valid keys in top level: .*train"):
        load_config(write(tmp_path, "c.yaml", "trian:\n  epochs: 3\n"))


def test_wrong_type_names_key_value_and_type(tmp_path):
    with pytest.raises(ConfigError, match=r"train\.epochs: 'ten' is not an int"):
        load_config(write(tmp_path, "c.yaml", "data: {demo: true}\ntrain:\n  epochs: ten\n"))
    with pytest.raises(ConfigError, match=r"data\.normalize: 'yes please' is not a bool"):
        load_config(write(tmp_path, "c.yaml", "data: {demo: true, normalize: yes please}\n"))


def test_out_of_range_and_choices(tmp_path):
    with pytest.raises(ConfigError, match=r"train\.epochs: 0 is below the minimum 1"):
        load_config(None, ["data.demo=true", "train.epochs=0"])
    with pytest.raises(ConfigError, match=r"optim\.scheduler: 'linear' is not one of none, step, cosine"):
        load_config(None, ["data.demo=true", "optim.scheduler=linear"])
    with pytest.raises(ConfigError, match=r"stft\.hop_length: 500 must not exceed n_fft=400"):
        load_config(None, ["data.demo=true", "stft.hop_length=500"])


def test_missing_required_value(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.train_dir: required unless data\.demo"):
        load_config(write(tmp_path, "c.yaml", "run: {name: x}\n"))


def test_bad_yaml_names_file_and_line(tmp_path):
    path = write(tmp_path, "bad.yaml", "data:\n  demo: true\n  batch_size: [4\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert f"{path}:" in str(err.value) and "invalid YAML" in str(err.value)
    assert ":4:" in str(err.value) or ":3:" in str(err.value)


def test_nonexistent_path(tmp_path):
    with pytest.raises(ConfigError, match="config file not found: .*nope.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_base_chain_and_cycle(tmp_path):
    write(tmp_path, "a.yaml", "data: {demo: true}\ntrain: {epochs: 7, log_every: 3}\n")
    child = write(tmp_path, "b.yaml", "base: a.yaml\ntrain: {epochs: 9}\n")
    cfg = load_config(child)
    assert (cfg.train.epochs, cfg.train.log_every, cfg.data.demo) == (9, 3, True)
    write(tmp_path, "x.yaml", "base: y.yaml\n")
    write(tmp_path, "y.yaml", "base: x.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "x.yaml")


def test_overrides_are_type_checked():
    cfg = load_config(None, ["data.demo=true", "optim.lr=1e-3", "train.amp=true", "run.name=exp_7",
                             "data.valid_max_seconds=null", "optim.betas=[0.9, 0.999]"])
    assert cfg.optim.lr == 1e-3 and cfg.train.amp is True and cfg.run.name == "exp_7"
    assert cfg.optim.betas == [0.9, 0.999]
    with pytest.raises(ConfigError, match=r"optim\.lr: 'fast' is not a float"):
        load_config(None, ["data.demo=true", "optim.lr=fast"])
    with pytest.raises(ConfigError, match="unknown key optim.learning_rate"):
        load_config(None, ["data.demo=true", "optim.learning_rate=1"])


@pytest.mark.parametrize("text", ["noequals", "=3", "a..b=1", ".a=1"])
def test_malformed_override(text):
    with pytest.raises(ConfigError, match="malformed override"):
        parse_override(text)


def test_shell_metacharacters_in_run_name_rejected():
    with pytest.raises(ConfigError, match="run.name"):
        load_config(None, ["data.demo=true", "run.name=a b;rm -rf"])


def test_resolved_config_round_trips(tmp_path, repo_root):
    cfg = load_config(repo_root / "configs/se_balanced.yaml", ["train.epochs=300"])
    save_config(cfg, tmp_path / "run" / "config.yaml")
    again = load_config(tmp_path / "run" / "config.yaml")
    assert again == cfg
    assert "base" not in yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())


def test_every_field_documents_why_it_exists():
    lines = describe(Config)
    assert lines and all("#" in line and not line.rstrip().endswith("#") for line in lines)


def test_launcher_reports_config_errors_in_one_line(tmp_path, repo_root):
    bad = write(tmp_path, "c.yaml", "data:\n  batchsize: 3\n")
    proc = subprocess.run([sys.executable, "launch.py", "--config", str(bad), "--dry-run"],
                          cwd=repo_root, capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "data.batchsize" in proc.stderr


@pytest.mark.parametrize("override, key", [
    ("stft.compress_factor=.nan", "stft.compress_factor"),
    ("optim.lr=.nan", "optim.lr"),
    ("optim.lr=-.inf", "optim.lr"),
    ("data.crop_seconds=.inf", "data.crop_seconds"),
    ("optim.betas=[0.8, .nan]", "optim.betas"),
    ("checkpoint.every_minutes=1e999", "checkpoint.every_minutes"),
    ("optim.grad_clip=100000000000000000000000000000000000000000000000000000000000000000000000000000000000"
     "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
     "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
     "00000000000000000000000000000000000000000000000000000000000000000000000", "optim.grad_clip"),
    ("run.seed=99999999999999999999999", "run.seed"),
    ("run.seed=4294967296", "run.seed"),
    ("train.epochs=99999999999999999999999", "train.epochs"),
])
def test_non_finite_and_overflowing_numbers_are_config_errors(override, key):
    """Issue item 6: NaN/Inf floats and integers beyond int64 (or what seeding accepts) name the key."""
    with pytest.raises(ConfigError, match=rf"^{key}\S*: "):
        load_config(None, ["data.demo=true", override])


def test_large_but_valid_seed_is_accepted():
    assert load_config(None, ["data.demo=true", "run.seed=4294966"]).run.seed == 4294966


def test_config_file_that_is_not_utf8_names_the_file(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("run:\n  name: caf\xe9\ndata:\n  demo: true\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1\.yaml: not UTF-8 text .*byte 0xe9") as err:
        load_config(path)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("override, key", [("stft.compress_factor=.nan", "stft.compress_factor"),
                                           ("run.seed=99999999999999999999999", "run.seed")])
def test_train_cli_refuses_non_finite_numbers_in_one_line(repo_root, tmp_path, override, key):
    proc = subprocess.run([sys.executable, "-m", "trainer.train", "--config", "configs/smoke.yaml", "--set",
                           override, "--run-dir", str(tmp_path / "r")], cwd=repo_root, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(proc.stderr.strip().splitlines()) == 1 and key in proc.stderr
    assert not (tmp_path / "r").exists()


def test_train_pesq_workers_is_the_speech_tasks_and_a_retired_key_elsewhere():
    """The PESQ pool's size is a setting of the speech task's train section (the key is unchanged);
    the creative task, whose older frozen configs and checkpoints hold the key, drops it when reading."""
    speech = load_config("configs/smoke.yaml", ["train.pesq_workers=3"])
    assert speech.train.pesq_workers == 3 and "train.pesq_workers (" in "\n".join(describe(type(speech)))
    creative = load_config("configs/creative_smoke.yaml", ["train.pesq_workers=3"])
    assert not hasattr(creative.train, "pesq_workers")
    assert "pesq" not in "\n".join(describe(Config)).lower()  # the core's own sections
