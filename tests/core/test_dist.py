import pytest

from trainer.core.env import DistEnv, cores_per_rank, read_env
from trainer.core.settings import ConfigError


def test_single_process_default():
    env = read_env({})
    assert env == DistEnv() and not env.is_distributed and env.is_main


def test_torchrun_contract_and_slurm_identity():
    env = read_env({"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "4",
                    "MASTER_ADDR": "n1", "MASTER_PORT": "29517", "SLURM_JOB_ID": "77", "SLURM_RESTART_COUNT": "2"})
    assert (env.rank, env.local_rank, env.world_size, env.local_world_size) == (3, 1, 8, 4)
    assert (env.master_addr, env.master_port, env.job_id, env.restart_count) == ("n1", 29517, "77", 2)
    assert env.is_distributed and not env.is_main


@pytest.mark.parametrize("environ, message", [
    ({"RANK": "x"}, "RANK='x' is not an integer"),
    ({"RANK": "4", "WORLD_SIZE": "4", "MASTER_ADDR": "a", "MASTER_PORT": "1"}, "RANK=4 is outside WORLD_SIZE=4"),
    ({"RANK": "0", "WORLD_SIZE": "2"}, "needs MASTER_ADDR and MASTER_PORT"),
])
def test_bad_environment(environ, message):
    with pytest.raises(ConfigError, match=message):
        read_env(environ)


def test_cores_split_between_local_ranks():
    assert cores_per_rank(DistEnv(local_world_size=1000)) == 1
    assert cores_per_rank(DistEnv()) >= 1


def test_cuda_ranks_keep_gloo_for_cpu_tensors():
    import torch

    from trainer.core.dist import backend_for

    assert backend_for(torch.device("cpu")) == "gloo"
    assert backend_for(torch.device("cuda", 0)) == "cpu:gloo,cuda:nccl"
