"""DDP: the JVP runs on the unwrapped network, yet DDP still all-reduces the gradients.

Lightning calls training_step through the DDP wrapper (so DDP prepares its backward hooks) and the objective
then calls torch.func.jvp on the plain module; the gradient hooks live on the shared parameters. Two CPU
processes (gloo), each with half of a global batch, must get the gradients of one process on the whole batch.
"""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from engine_helpers import tiny_model
from torch.nn.parallel import DistributedDataParallel

from neuromf.meanflow import MeanFlowObjective


class ObjectiveStep(torch.nn.Module):
    """What Lightning's DDP wrapper does: forward = the training step, which uses the inner network directly."""

    def __init__(self, net):
        super().__init__()
        self.net, self.objective = net, MeanFlowObjective(jvp="exact", norm_p=1.0)

    def forward(self, x, eps, r, t):
        return self.objective(self.net, x, eps=eps, r=r, t=t)[0]


def _batch():
    g = torch.Generator().manual_seed(0)
    x, eps = torch.randn(4, 2, 8, 8, 8, generator=g), torch.randn(4, 2, 8, 8, 8, generator=g)
    t = torch.tensor([0.9, 0.6, 0.5, 0.3])
    return x, eps, torch.tensor([0.2, 0.6, 0.1, 0.0]), t


def _grads(step):
    return torch.cat([p.grad.flatten() for p in step.net.parameters()])


def _worker(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    step = ObjectiveStep(tiny_model(seed=0, use_v_head=True))
    ddp = DistributedDataParallel(step)
    half = slice(rank * 2, rank * 2 + 2)
    ddp(*(a[half] for a in _batch())).backward()
    if rank == 0:
        torch.save(_grads(step), out)
    dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_gradients_match_a_single_process_run(tmp_path):
    single = ObjectiveStep(tiny_model(seed=0, use_v_head=True))
    single(*_batch()).backward()
    out = tmp_path / "rank0.pt"
    port = 29500 + os.getpid() % 1000
    mp.spawn(_worker, args=(2, port, str(out)), nprocs=2, join=True)
    torch.testing.assert_close(torch.load(out), _grads(single), rtol=1e-4, atol=1e-6)
