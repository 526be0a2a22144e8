"""FSDP2 (fully_shard) training with fusedopt.optim.SGD, checkpointed with torch.distributed.checkpoint.

    torchrun --nproc_per_node 2 examples/fsdp2_sgd.py            # gloo on CPU
    torchrun --nproc_per_node 8 examples/fsdp2_sgd.py --cuda     # nccl, one GPU per rank

The params are DTensors sharded across the ranks; fusedopt steps each rank's local shards with one
fused kernel per param group, and keeps the momentum buffers as DTensors like torch.optim.SGD does,
so DCP saves and loads them unchanged.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

import fusedopt


def build(device: torch.device) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)  # the same initial weights on every rank
    model = nn.Sequential(nn.Linear(64, 256), nn.GELU(), nn.Linear(256, 256), nn.GELU(), nn.Linear(256, 10))
    model.to(device)
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    for layer in model:
        if isinstance(layer, nn.Linear):
            fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    opt = fusedopt.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4)
    return model, opt


# A task to learn: the class a fixed random linear map scores highest.
TEACHER = torch.randn(64, 10, generator=torch.Generator().manual_seed(42))


def train(model, opt, steps: int, device: torch.device, seed: int) -> float:
    g = torch.Generator().manual_seed(seed * 1000 + dist.get_rank())  # each rank its own data
    for _ in range(steps):
        x = torch.randn(32, 64, generator=g)
        y = (x @ TEACHER).argmax(dim=1).to(device)
        x = x.to(device)
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    loss = loss.detach().clone()
    dist.all_reduce(loss, op=dist.ReduceOp.AVG)
    return loss.item()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cuda", action="store_true", help="nccl, one GPU per rank")
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    dist.init_process_group("nccl" if args.cuda else "gloo")
    rank = dist.get_rank()
    if args.cuda:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    device = torch.device("cuda", torch.cuda.current_device()) if args.cuda else torch.device("cpu")

    model, opt = build(device)
    first = train(model, opt, 1, device, seed=0)
    loss = train(model, opt, args.steps, device, seed=1)
    weight = next(model.parameters())
    if rank == 0:
        print(f"loss {first:.4f} after 1 step, {loss:.4f} after {args.steps} more; param 0 is a {type(weight).__name__} "
              f"{tuple(weight.shape)} holding {tuple(weight.to_local().shape)} on each rank; "
              f"its momentum buffer is a {type(opt.state[weight]['momentum_buffer']).__name__}")

    # Save the sharded model and optimizer state, load it into a fresh model, and continue both.
    directory = [tempfile.mkdtemp(prefix="fsdp2_sgd_") if rank == 0 else None]
    dist.broadcast_object_list(directory)
    model_sd, optim_sd = get_state_dict(model, opt)
    dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=directory[0])

    restored, restored_opt = build(device)
    model_sd, optim_sd = get_state_dict(restored, restored_opt)
    state = {"model": model_sd, "optim": optim_sd}
    dcp.load(state, checkpoint_id=directory[0])
    set_state_dict(restored, restored_opt, model_state_dict=state["model"], optim_state_dict=state["optim"])

    loss = train(model, opt, 5, device, seed=2)
    restored_loss = train(restored, restored_opt, 5, device, seed=2)
    same = all(torch.equal(a.full_tensor(), b.full_tensor())
               for a, b in zip(model.parameters(), restored.parameters()))
    if rank == 0:
        print(f"5 more steps: loss {loss:.4f} (original) {restored_loss:.4f} (restored from "
              f"{directory[0]}); params identical: {same}")
    dist.barrier()
    if rank == 0:
        shutil.rmtree(directory[0])
    dist.destroy_process_group()
    if not same:
        raise SystemExit("the restored run diverged from the original")


if __name__ == "__main__":
    main()
