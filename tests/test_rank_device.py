"""Each torchrun rank's GPU, on CPU: `device_count` and the environment faked."""
from __future__ import annotations

import pytest
import torch

from hear_matpac.files.ranks import Ranks, rank_device, torchrun_ranks


@pytest.fixture
def gpus(monkeypatch):
    """`gpus(n)`: this process sees `n` GPUs; returns the indices `set_device` was given."""
    chosen: list[int] = []

    def see(count: int) -> list[int]:
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        monkeypatch.setattr(torch.cuda, "set_device", lambda index: chosen.append(index))
        return chosen

    return see


def _rank(local_rank: int, monkeypatch, visible: str) -> Ranks:
    env = {"WORLD_SIZE": "4", "RANK": str(local_rank), "LOCAL_RANK": str(local_rank), "CUDA_VISIBLE_DEVICES": visible}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return torchrun_ranks()


def test_one_visible_gpu_per_task_is_every_ranks_own(gpus, monkeypatch):
    """Slurm binds one GPU per task: rank 3 sees only its own GPU, as cuda:0."""
    chosen = gpus(1)
    ranks = _rank(3, monkeypatch, visible="3")
    assert rank_device(torch.device("cuda"), ranks) == torch.device("cuda", 0)
    assert chosen == [0]


def test_every_gpu_visible_gives_gpu_local_rank(gpus, monkeypatch):
    chosen = gpus(4)
    assert rank_device(torch.device("cuda"), _rank(2, monkeypatch, visible="0,1,2,3")) == torch.device("cuda", 2)
    assert chosen == [2]


def test_more_ranks_than_visible_gpus_is_one_line(gpus, monkeypatch):
    gpus(2)
    with pytest.raises(ValueError, match="local rank 3 has no GPU of its own") as caught:
        rank_device(torch.device("cuda"), _rank(3, monkeypatch, visible="0,1"))
    assert "\n" not in str(caught.value)


def test_an_explicit_gpu_index_under_torchrun_is_refused_in_one_line(gpus, monkeypatch):
    chosen = gpus(4)
    with pytest.raises(ValueError, match="every rank on that one GPU") as caught:
        rank_device(torch.device("cuda:0"), _rank(1, monkeypatch, visible="0,1,2,3"))
    assert "\n" not in str(caught.value) and chosen == []


def test_outside_torchrun_and_on_cpu_the_device_is_kept(gpus):
    gpus(4)
    assert rank_device(torch.device("cuda:1"), None) == torch.device("cuda", 1)
    assert rank_device(torch.device("cpu"), Ranks(1, 2, 1)) == torch.device("cpu")
