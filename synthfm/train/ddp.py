"""Multi-GPU / multi-node training with PyTorch's DistributedDataParallel, launched by ``torchrun``.

    torchrun --nproc_per_node 4 -m synthfm.train.ddp --model synthfm-vit-b --samples 100000 --steps 20000 \\
        --batch-size 8 --data on-the-fly --out runs/vit-b

Every rank draws different sample indices and prompts (its rank is part of each step's random key);
gradients are averaged by DDP, so all ranks hold identical decoder weights after every step.  Rank 0
prepares the embedding cache (others wait), validates and writes checkpoints.  Backend: ``nccl`` on
GPUs, ``gloo`` on CPUs.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import List, Optional

import torch
import torch.distributed as dist

from synthfm.train.trainer import TrainConfig, Trainer
from synthfm.utils.progress import CancelToken, ProgressCallback


def default_backend() -> str:
    return "nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"


def train_ddp(config: TrainConfig, resume: bool = True, progress: Optional[ProgressCallback] = None,
              cancel: Optional[CancelToken] = None) -> Path:
    """Train on this rank of an already initialised process group; returns the checkpoint path."""
    return ddp_trainer(config, resume, progress, cancel).checkpoint_path


def ddp_trainer(config: TrainConfig, resume: bool = True, progress: Optional[ProgressCallback] = None,
                cancel: Optional[CancelToken] = None) -> Trainer:
    """Like :func:`train_ddp` but returns this rank's finished :class:`Trainer`."""
    if not dist.is_initialized():
        raise RuntimeError("train_ddp needs an initialised process group; launch with torchrun "
                           "(python -m torch.distributed.run ... -m synthfm.train.ddp) or call init_distributed()")
    rank, world = dist.get_rank(), dist.get_world_size()
    trainer = Trainer(config, rank=rank, world_size=world)
    if resume:
        trainer.resume()
    if rank == 0:  # one rank fills the shared cache, the others then open the finished one
        trainer.prepare_data(None, cancel)
    dist.barrier()
    if rank != 0:
        trainer.prepare_data(None, cancel)
    trainer.step_loss = torch.nn.parallel.DistributedDataParallel(
        trainer.step_loss, find_unused_parameters=True)  # box-only steps leave point embeddings unused
    trainer.run(progress if rank == 0 else None, cancel)
    dist.barrier()
    return trainer


def init_distributed(backend: Optional[str] = None) -> None:
    """Join the process group described by torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR...)."""
    backend = backend or default_backend()
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _local_worker(rank: int, world: int, port: int, config: TrainConfig, weights_dir: Optional[str]) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        trainer = ddp_trainer(config)
        if weights_dir:
            torch.save(trainer.model.decoder_state_dict(), Path(weights_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def run_local(config: TrainConfig, world_size: int = 2, weights_dir: Optional[str] = None) -> Path:
    """Run DDP with ``world_size`` CPU processes (gloo) on this machine, without torchrun.

    With ``weights_dir`` each rank also saves its final decoder weights as ``rank<N>.pt`` there, so
    one can check that the ranks agree.
    """
    import torch.multiprocessing as mp

    mp.spawn(_local_worker, args=(world_size, _free_port(), config, weights_dir), nprocs=world_size, join=True)
    return Path(config.out) / f"{config.model}.pt"


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point for ``torchrun ... -m synthfm.train.ddp`` with the same options as ``synthfm train``."""
    import argparse

    from synthfm.train.cli import config_from_args, register

    parser = argparse.ArgumentParser(prog="synthfm.train.ddp")
    register(parser.add_subparsers())
    args = parser.parse_args(["train", *(sys.argv[1:] if argv is None else argv)])
    init_distributed()
    try:
        if args.device == "auto" and torch.cuda.is_available():
            args.device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        config = config_from_args(args)
        path = train_ddp(config, resume=not args.no_resume)
        if dist.get_rank() == 0:
            print(f"wrote decoder checkpoint {path}")
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
