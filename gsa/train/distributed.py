"""Process group set-up under torchrun and model wrapping (DDP or FSDP2), the torchtitan way: activation
checkpointing, then per-block compile, then sharding, all applied from outside the plain model."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from gsa.errors import InputError

from .model import apply_activation_checkpointing, apply_compile, blocks


@dataclass
class Dist:
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        value = value.detach().float().clone()
        if self.world > 1:
            dist.all_reduce(value)
            value /= self.world
        return value

    def sum(self, value: torch.Tensor) -> torch.Tensor:
        value = value.detach().double().clone()
        if self.world > 1:
            dist.all_reduce(value)
        return value


def setup(device: str = "auto") -> Dist:
    """Read torchrun's environment (a single process without it); gloo on CPU, NCCL on GPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise InputError("train.device = 'cuda' but no CUDA device is available (torch.cuda.is_available() is "
                             "False): use 'cpu' or 'auto'")
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return Dist(rank, world, local_rank, dev)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: nn.Module, d: Dist, parallel: str, bf16: bool, activation_checkpointing: bool, compile: bool):
    """Move to the device and apply AC, compile and DDP / FSDP2 (only with more than one process)."""
    model.to(d.device)
    if activation_checkpointing:
        apply_activation_checkpointing(model)
    if compile:
        apply_compile(model)
    if d.world == 1:
        return model
    if parallel == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        return DDP(model, device_ids=[d.local_rank] if d.device.type == "cuda" else None)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(d.device.type, (d.world,))
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else MixedPrecisionPolicy()
    for block in blocks(model):
        fully_shard(block, mesh=mesh, mp_policy=mp)
    fully_shard(model, mesh=mesh, mp_policy=mp)
    return model
