"""On a GPU: the default job in bf16 with the members held on the device, streamed members
normalised on the device, features and white-box attacks on the GPU, and DDP over every GPU."""

import json
from pathlib import Path

import pytest
import torch

from mia import features
from mia.attacks import aea, mcd
from mia.pipeline import run

pytestmark = [pytest.mark.gpu, pytest.mark.slow]


def test_job_on_gpu_in_bf16(make_cfg):
    res = json.loads(run(make_cfg("train.epochs=3")).read_text())
    target = json.loads((Path(res["target"]["checkpoint"]).parent / "target.json").read_text())
    assert (target["precision"], target["device"], target["world_size"]) == (
        "bf16-mixed",
        "cuda:0",
        1,
    )
    assert res["attacks"]["csa"]["auc"] > 0.5


def test_streamed_job_on_gpu(make_cfg):
    """Members streamed by loader workers as uint8, normalised on the GPU, each trained once per
    epoch."""
    res = json.loads(
        run(
            make_cfg("data.in_memory=false", "train.num_workers=auto", "train.epochs=2")
        ).read_text()
    )
    target = json.loads((Path(res["target"]["checkpoint"]).parent / "target.json").read_text())
    assert (target["plan"]["in_memory"], target["device"], target["epochs"]) == (False, "cuda:0", 2)
    assert target["num_workers"] >= 1


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="DDP over GPUs needs two of them")
def test_ddp_over_gpus_matches_ddp_cpu(make_cfg, tmp_path):
    one_step = [
        "data.size=128",
        "train.batch_size=128",
        "train.epochs=1",
        "train.precision=32-true",
    ]
    gpu = json.loads(
        run(make_cfg(*one_step, "trainer=ddp", f"paths.root_dir={tmp_path}/gpu")).read_text()
    )
    cpu = json.loads(
        run(make_cfg(*one_step, "trainer=ddp_cpu", f"paths.root_dir={tmp_path}/cpu")).read_text()
    )
    assert gpu["target"]["world_size"] == cpu["target"]["world_size"] == 2
    assert gpu["gap"]["value"] == pytest.approx(cpu["gap"]["value"], abs=1e-3)


def test_features_and_white_box_attacks_run_on_the_gpu(make_cfg, monkeypatch):
    """The target stays on the job's GPU after training: the feature store and the attacks that run
    the model (mcd's passes, aea's views, paramgrad's gradients) all run there."""
    devices = []

    def spying(fn, model_of):
        def spy(*args, **kwargs):
            devices.append((fn.__name__, next(model_of(*args).parameters()).device.type))
            return fn(*args, **kwargs)

        return spy

    monkeypatch.setattr(features, "embed", spying(features.embed, lambda model, *_: model))
    monkeypatch.setattr(
        mcd.MCD, "pass_cos", spying(mcd.MCD.pass_cos, lambda self, model, *_: model)
    )
    monkeypatch.setattr(
        aea, "image_views", spying(aea.image_views, lambda ctx, *_: ctx.target.model)
    )
    res = json.loads(
        run(
            make_cfg(
                "train.epochs=1",
                "attack=[csa,mcd,aea,paramgrad]",
                "attack.aea.repeats=1",
                "attack.mcd.passes=2",
            )
        ).read_text()
    )
    assert {name for name, _ in devices} == {"embed", "pass_cos", "image_views"}
    assert {device for _, device in devices} == {"cuda"}
    assert set(res["attacks"]) == {"csa", "mcd", "aea", "paramgrad"}
