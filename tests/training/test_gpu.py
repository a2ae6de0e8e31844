"""On a GPU: the default job in bf16 with the members held on the device, and DDP over every GPU."""
import json
from pathlib import Path

import pytest
import torch

from mia.pipeline import run

pytestmark = [pytest.mark.gpu, pytest.mark.slow]


def test_job_on_gpu_in_bf16(make_cfg):
    res = json.loads(run(make_cfg("train.epochs=3")).read_text())
    target = json.loads((Path(res["target"]["checkpoint"]).parent / "target.json").read_text())
    assert (target["precision"], target["device"], target["world_size"]) == ("bf16-mixed", "cuda:0", 1)
    assert res["attacks"]["csa"]["auc"] > 0.5


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="DDP over GPUs needs two of them")
def test_ddp_over_gpus_matches_ddp_cpu(make_cfg, tmp_path):
    one_step = ["data.size=128", "train.batch_size=128", "train.epochs=1", "train.precision=32-true"]
    gpu = json.loads(run(make_cfg(*one_step, "trainer=ddp", f"paths.root_dir={tmp_path}/gpu")).read_text())
    cpu = json.loads(run(make_cfg(*one_step, "trainer=ddp_cpu", f"paths.root_dir={tmp_path}/cpu")).read_text())
    assert gpu["target"]["world_size"] == cpu["target"]["world_size"] == 2
    assert gpu["gap"]["value"] == pytest.approx(cpu["gap"]["value"], abs=1e-3)
