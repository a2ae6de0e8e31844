"""Multi-process jobs: who the ranks are, how they are started, and the few collectives the pipeline
needs outside Lightning (a cache decision taken by rank 0, gathered features).

A job with trainer.devices x trainer.num_nodes > 1 runs the pipeline once per rank. The ranks come
from one of three places:
  - SLURM: submitit starts one task per GPU (tasks_per_node == trainer.devices); Lightning's
    SLURMEnvironment names the ranks. auto_requeue=False: submitit does the requeueing.
  - an outside launcher (torchrun, or the ranks this module spawns): LOCAL_RANK is set.
  - neither: this process becomes rank 0 and spawns the other local ranks itself. Fresh
    interpreters that call the job's entry point (`entry(*args)`, handed to `session`), never
    sys.argv again, so a Hydra multirun is not re-entered (docs/design.md §7.1).
All ranks train together (DDP) and extract features together; rank 0 alone runs the attacks and
writes results, plots and the W&B run.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from lightning.fabric.plugins.environments import LightningEnvironment, SLURMEnvironment
from lightning.fabric.plugins.environments.lightning import find_free_network_port

log = logging.getLogger(__name__)

# Rank 0 may hold the process group while it waits for another job's cache lock.
TIMEOUT = timedelta(hours=6)
_RANK_ENV = ("LOCAL_RANK", "NODE_RANK", "RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    cluster: object = None  # the Lightning cluster environment every Trainer of this job gets

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def broadcast(self, obj):
        """rank 0's `obj` on every rank."""
        if self.size == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj) -> list | None:
        """[obj of rank 0, obj of rank 1, ...] on rank 0; None elsewhere."""
        if self.size == 1:
            return [obj]
        out = [None] * self.size if self.is_main else None
        dist.gather_object(obj, out, dst=0)
        return out

    def barrier(self):
        if self.size > 1:
            dist.barrier()


def world_size(trainer) -> int:
    """Ranks of a job whose `trainer` group (or mia.training.spec.TrainerArgs) is given."""
    return int(trainer.devices) * int(trainer.num_nodes)


def _on_gpu(trainer) -> bool:
    return trainer.accelerator in ("gpu", "cuda") or (
        trainer.accelerator == "auto" and torch.cuda.is_available()
    )


def device_of(trainer) -> torch.device:
    """The kind of device a job of this `trainer` group trains on (rank 0's; what
    `train.precision=auto` resolves against), without the checks a job makes before it starts."""
    return torch.device("cuda", 0) if _on_gpu(trainer) else torch.device("cpu")


def _device(trainer, local_rank: int) -> torch.device:
    if _on_gpu(trainer):
        if not torch.cuda.is_available():
            raise RuntimeError(
                f"trainer.accelerator={trainer.accelerator} but no GPU is visible; "
                "use trainer=ddp_cpu to run DDP on the CPU"
            )
        if trainer.devices > torch.cuda.device_count():
            raise RuntimeError(
                f"trainer.devices={trainer.devices} but this node has "
                f"{torch.cuda.device_count()} GPUs"
            )
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def single(trainer) -> World:
    """This process alone (the default job, shadow models, tests). In a one-task SLURM job Lightning
    still gets SLURMEnvironment(auto_requeue=False), so it leaves the requeueing to submitit."""
    one_task = SLURMEnvironment.detect() and int(os.environ.get("SLURM_NTASKS", "1")) == 1
    cluster = SLURMEnvironment(auto_requeue=False) if one_task else LightningEnvironment()
    return World(device=_device(trainer, 0), cluster=cluster)


@contextmanager
def session(trainer, entry, *args):
    """The World of a job of this `trainer` group (mia.training.spec.TrainerArgs): a single process,
    or every rank joined in one process group. `entry(*args)` is what each spawned local rank runs:
    a module-level function (it and `args` are pickled)."""
    n = world_size(trainer)
    if n == 1:
        yield single(trainer)
        return
    saved = {k: os.environ.get(k) for k in _RANK_ENV}
    threads = torch.get_num_threads()
    try:
        world, children = _join(trainer, n, entry, args)
    except BaseException:
        _restore(saved, threads)
        raise
    log.info("rank %d of %d joined (%s)", world.rank, n, world.device)
    failed, finished = False, threading.Event()
    if children:
        threading.Thread(target=_watch, args=(children, finished), daemon=True).start()
    try:
        yield world
    except BaseException:
        failed = True
        raise
    finally:
        finished.set()
        if dist.is_initialized():
            if not failed:
                dist.barrier()
            dist.destroy_process_group()
        for child in children:
            child.join(timeout=None if not failed else 30)
            if child.is_alive():
                child.kill()
        _restore(saved, threads)
        bad = [c.exitcode for c in children if c.exitcode != 0]
        if bad and not failed:
            raise RuntimeError(
                f"{len(bad)} of the local ranks failed (exit codes {bad}); see their logs above"
            )


def _restore(saved_env: dict, threads: int):
    """The next job of a multirun starts clean: no rank variables, the thread count it had."""
    torch.set_num_threads(threads)
    for k, v in saved_env.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _join(trainer, n: int, entry, args):
    """(World, locally spawned children) with the process group initialised."""
    children = []
    if SLURMEnvironment.detect():
        cluster = SLURMEnvironment(auto_requeue=False)
        if cluster.world_size() != n:
            raise RuntimeError(
                f"trainer.devices x trainer.num_nodes = {n}, but SLURM started "
                f"{cluster.world_size()} tasks: use hydra/launcher=slurm, which sets "
                "tasks_per_node=trainer.devices and nodes=trainer.num_nodes"
            )
        rank, local_rank = cluster.global_rank(), cluster.local_rank()
        os.environ.update(MASTER_ADDR=cluster.main_address, MASTER_PORT=str(cluster.main_port))
    else:
        if "LOCAL_RANK" not in os.environ:
            if trainer.num_nodes != 1:
                raise RuntimeError(
                    f"trainer.num_nodes={trainer.num_nodes} needs a cluster launcher: "
                    "run the sweep with hydra/launcher=slurm"
                )
            _device(trainer, 0)  # a bad trainer config fails here, before any rank is started
            children = _spawn_local_ranks(n, entry, args)
        cluster = LightningEnvironment()
        local_rank = cluster.local_rank()
        rank = cluster.node_rank() * int(trainer.devices) + local_rank
        cluster.set_world_size(n)
        cluster.set_global_rank(rank)
    try:
        world = World(
            rank=rank,
            size=n,
            local_rank=local_rank,
            device=_device(trainer, local_rank),
            cluster=cluster,
        )
        if world.device.type == "cuda":
            torch.cuda.set_device(world.device)
        else:  # CPU ranks share the node's cores
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(trainer.devices)))
        dist.init_process_group(
            "nccl" if world.device.type == "cuda" else "gloo",
            rank=rank,
            world_size=n,
            timeout=TIMEOUT,
        )
    except BaseException:
        for child in children:  # they would wait for rank 0 until the timeout
            child.kill()
        raise
    return world, children


def _watch(children, finished, grace_s: float = 60.0):
    """A local rank that dies leaves the others blocked in a collective until the (long) timeout:
    after a grace period for the error to surface here too, end this job rather than hang."""
    while not finished.wait(2.0):
        dead = [c for c in children if c.exitcode not in (None, 0)]
        if dead:
            log.error("local rank %s died (exit code %s)", dead[0].name, dead[0].exitcode)
            if not finished.wait(grace_s):
                log.error("the job is still waiting on it after %.0f s: exiting", grace_s)
                for c in children:
                    c.kill()
                os._exit(1)
            return


def _spawn_local_ranks(n: int, entry, args) -> list:
    """Start local ranks 1..n-1; this process is rank 0."""
    port = str(find_free_network_port())
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=port,
        LOCAL_RANK="0",
        NODE_RANK="0",
        WORLD_SIZE=str(n),
        RANK="0",
    )
    ctx = mp.get_context("spawn")
    children = []
    for r in range(1, n):
        env = {
            **{k: os.environ[k] for k in ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "WORLD_SIZE")},
            "LOCAL_RANK": str(r),
            "RANK": str(r),
        }
        p = ctx.Process(
            target=_rank_main, args=(entry, args, env), name=f"mia-rank{r}", daemon=False
        )
        p.start()
        children.append(p)
    log.info("started %d local ranks for a %d-process job (MASTER_PORT=%s)", n - 1, n, port)
    return children


def _rank_main(entry, args, env):
    os.environ.update(env)
    logging.basicConfig(
        level=logging.INFO, format=f"[rank {env['RANK']}] %(levelname)s %(name)s: %(message)s"
    )
    entry(*args)
