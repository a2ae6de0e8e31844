"""DDP on the CPU (trainer=ddp_cpu: gloo, two processes): the same step, the same members, the same
features as one process, and a multirun that starts its ranks without re-entering the sweep."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import BatchSampler, DataLoader, TensorDataset

from mia.data.order import MemberOrder
from mia.model import build_model
from mia.pipeline import run
from tests.helpers.caches import seed_cache
from tests.helpers.config import SMALL

ROOT = Path(__file__).resolve().parents[2]


def batches(order, epoch, local_batch):
    order.set_epoch(epoch)
    return [list(b) for b in BatchSampler(order, local_batch, drop_last=False)]


def test_one_rank_order_is_the_shuffled_dataloader_order():
    loader = DataLoader(
        TensorDataset(torch.arange(300)),
        batch_size=64,
        shuffle=True,
        generator=torch.Generator().manual_seed(3),
    )
    expected = [[b[0].tolist() for b in loader] for _ in range(3)]
    order = MemberOrder(300, 64, seed=3)
    assert [batches(order, e, 64) for e in range(3)] == expected
    # a resumed run starts at epoch 2 and must see what an uninterrupted one saw
    assert batches(MemberOrder(300, 64, seed=3), 2, 64) == expected[2]


@pytest.mark.parametrize("n, world", [(300, 2), (256, 4), (1000, 4)])
def test_ranks_split_every_global_batch_evenly(n, world):
    global_batch = 64
    whole = batches(MemberOrder(n, global_batch, seed=0), 1, global_batch)
    per_rank = [
        batches(MemberOrder(n, global_batch, 0, r, world), 1, global_batch // world)
        for r in range(world)
    ]
    assert len({len(b) for b in per_rank}) == 1  # equal batch counts, or DDP hangs
    for step, g in enumerate(whole):
        local = [b[step] for b in per_rank]
        assert len({len(x) for x in local}) == 1  # equal local sizes: all_gather needs them
        assert sorted(sum(local, [])) == sorted(g)  # together, exactly the one-process global batch
    assert sorted(sum((sum(b, []) for b in per_rank), [])) == list(range(n))  # each member once


def test_uneven_split_is_refused():
    with pytest.raises(ValueError, match="data.size=301"):
        MemberOrder(301, 64, 0, 0, 2)
    with pytest.raises(ValueError, match="train.batch_size=63"):
        MemberOrder(300, 63, 0, 0, 2)


def _target_dir(res: dict) -> Path:
    return Path(res["target"]["checkpoint"]).parent


@pytest.mark.slow
def test_ddp_cpu_matches_one_process(make_cfg, tmp_path, small_cache):
    # N = global batch and T = 1: the whole training is one optimiser step on one global batch.
    one_step = ["data.size=128", "train.batch_size=128", "train.epochs=1"]
    for root in ("single", "ddp"):
        seed_cache(small_cache, tmp_path / root / ".cache")
    cfg = make_cfg(*one_step, f"paths.root_dir={tmp_path}/single")
    single = json.loads(run(cfg).read_text())
    ddp = json.loads(
        run(make_cfg(*one_step, "trainer=ddp_cpu", f"paths.root_dir={tmp_path}/ddp")).read_text()
    )
    assert ddp["target"]["world_size"] == 2 and single["target"]["world_size"] == 1
    a = torch.load(_target_dir(single) / "model.pt", weights_only=True)
    b = torch.load(_target_dir(ddp) / "model.pt", weights_only=True)
    L.seed_everything(cfg.seed)
    init = build_model(cfg.model)[0].state_dict()  # what training starts from
    moved = 0
    for name in a:
        torch.testing.assert_close(
            b[name], a[name], rtol=0, atol=1e-5, msg=f"{name} differs after one step"
        )
        moved += int(not torch.allclose(a[name], init[name], rtol=0, atol=1e-5))
    assert moved > len(a) // 2, (
        "the step barely changed the weights: the comparison would prove nothing"
    )
    # the members trained on, across both ranks, are exactly the member set (each once: coverage
    # check)
    members = (_target_dir(ddp) / "trained_uids.txt").read_text().split()
    assert (
        members == (_target_dir(single) / "trained_uids.txt").read_text().split()
        and len(members) == 128
    )

    # Features: the same weights embedded by two ranks and by one give the same store.
    feats = lambda res: next((_target_dir(res) / "features").glob("*.npz"))  # noqa: E731
    shutil.copy(_target_dir(single) / "model.pt", _target_dir(ddp) / "model.pt")
    feats(ddp).unlink()
    again = json.loads(
        run(make_cfg(*one_step, "trainer=ddp_cpu", f"paths.root_dir={tmp_path}/ddp")).read_text()
    )
    assert again["target"]["cache_hit"] and not again["data"]["features_cache_hit"]
    with np.load(feats(single)) as x, np.load(feats(again)) as y:
        assert sorted(x["uids"]) == list(y["uids"])  # de-duplicated: every uid once
        row = {u: i for i, u in enumerate(x["uids"])}
        idx = [row[u] for u in y["uids"]]
        for key in ("image", "text", "cos"):
            np.testing.assert_allclose(y[key], x[key][idx], atol=1e-5)
    assert again["attacks"]["csa"]["auc"] == pytest.approx(
        single["attacks"]["csa"]["auc"], abs=1e-6
    )


@pytest.mark.slow
def test_multirun_with_ddp_cpu_does_not_reenter_the_sweep(tmp_path, small_corpus):
    """Lightning's own DDP launcher re-runs sys.argv, which would start the sweep again per rank."""
    args = [
        sys.executable,
        "run.py",
        "-m",
        *SMALL,
        "data.size=200,300",
        "trainer=ddp_cpu",
        "logger=none",
        f"paths.root_dir={tmp_path}",
        "hydra.callbacks={}",
    ]
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    sweeps = list((tmp_path / "outputs" / "multiruns").iterdir())
    assert len(sweeps) == 1, f"the sweep was started {len(sweeps)} times"
    results = sorted(sweeps[0].glob("*/results.json"))
    assert len(results) == 2
    sizes = sorted(json.loads(p.read_text())["target"]["size"] for p in results)
    worlds = {json.loads(p.read_text())["target"]["world_size"] for p in results}
    assert sizes == [200, 300] and worlds == {2}


def test_a_dead_local_rank_ends_the_job_instead_of_hanging():
    code = (
        "import multiprocessing as mp, sys, threading\n"
        "from mia.distributed import _watch\n"
        "if __name__ == '__main__':\n"
        "    child = mp.get_context('spawn').Process(target=sys.exit, args=(3,)); "
        "child.start(); child.join()\n"
        "    _watch([child], threading.Event(), grace_s=0.5)\n"
        "    print('not reached')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1 and "not reached" not in done.stdout
    assert "died (exit code 3)" in done.stderr


@pytest.mark.slow
@pytest.mark.parametrize("trainer, workers", [("default", 2), ("ddp_cpu", 1)])
def test_streamed_training_covers_every_member_once_per_epoch(
    make_cfg, small_corpus, trainer, workers
):
    """data.in_memory=false: shards streamed by loader workers (and dealt to ranks under DDP). The
    coverage check inside training fails the job unless every member was seen exactly T times."""
    cfg = make_cfg(
        "data.in_memory=false",
        f"train.num_workers={workers}",
        f"trainer={trainer}",
        "data.size=200",
    )
    res = json.loads(run(cfg).read_text())
    members = (_target_dir(res) / "trained_uids.txt").read_text().split()
    assert len(members) == len(set(members)) == 200 and res["target"]["epochs"] == 2


def test_a_bad_trainer_config_is_refused_before_any_rank_starts(make_cfg, monkeypatch):
    import os

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="trainer.accelerator=gpu"):
        run(make_cfg("trainer=ddp"))
    assert "LOCAL_RANK" not in os.environ and "MASTER_PORT" not in os.environ
