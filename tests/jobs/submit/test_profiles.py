"""Cluster profiles (jobs/submit/profiles.py): configs/clusters/*.yaml as typed settings."""

import pytest

from jobs.submit.profiles import load_profile
from trainer.core.settings import ConfigError


def test_levante_profile_holds_the_cluster_facts():
    levante = load_profile("levante")
    assert (levante.partition, levante.max_gpus_per_node, levante.max_time_s) == ("gpu", 4, 12 * 3600)
    assert levante.account_required


def test_profile_with_unknown_key_is_one_line_naming_file_and_key(tmp_path):
    bad = tmp_path / "mycluster.yaml"
    bad.write_text("partition: gpu\ngpus: 4\n")
    with pytest.raises(ConfigError, match=r"mycluster.yaml: unknown key gpus"):
        load_profile(str(bad))
    with pytest.raises(ConfigError, match="unknown cluster profile 'nowhere'.*levante"):
        load_profile("nowhere")
