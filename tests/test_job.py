"""The job spec refuses every bad value before any work, naming its key; run.py turns that into one
line and exit status 2, leaving no run folder."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mia.data.corpus import Audit, Synthetic
from mia.job import JobSpec
from mia.training.stage import FromCheckpoint, TrainHere
from mia.validate import ConfigError
from tests.helpers.config import compose_config

ROOT = Path(__file__).resolve().parents[1]


def test_the_default_job_parses_into_typed_parts():
    job = JobSpec.parse(compose_config())
    assert (
        isinstance(job.data, Synthetic)
        and job.data.size == 1000
        and job.data.split.eval_size == 500
    )
    assert (
        isinstance(job.target, TrainHere)
        and job.train.defense.name == "none"
        and list(job.attacks) == ["csa"]
    )
    assert job.data.canaries is None and job.data.condition == "iid"
    assert job.n == 1000 and job.train.trainer.devices == 1 and job.config["seed"] == 0


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    """Paths the job spec finds (it checks that they exist): a shard folder and a checkpoint file,
    outside the tests' own tmp_path, which must stay empty."""
    root = tmp_path_factory.mktemp("files")
    (root / "shards").mkdir()
    (root / "shards" / "00000.tar").write_bytes(b"")
    (root / "model.pt").write_bytes(b"")
    return {
        "shards": str(root / "shards"),
        "ckpt": str(root / "model.pt"),
        "missing": str(root / "missing"),
    }


@pytest.mark.parametrize(
    "overrides, fix",
    [
        (["trainer=ddp_cpu", "data.size=1001"], "the largest that fits is data.size=1000"),
        (
            ["data.corpus.size=2k", "data.split.holdout=1800"],
            "the largest that fits is data.split.eval_size=300",
        ),
    ],
)
def test_a_size_that_does_not_fit_is_refused_with_the_largest_that_does(overrides, fix):
    with pytest.raises(ConfigError, match=fix):
        JobSpec.parse(compose_config(*overrides))


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["data.size=0"], "data.size"),
        (["data.size=lots"], "data.size"),
        (["data.nonmembers=both"], "data.nonmembers"),
        (["data.split.eval_size=-5"], "data.split.eval_size"),
        (["data.split.holdout=x"], "data.split.holdout"),
        (["data.split.seed=-1"], "data.split.seed"),
        (["data.split.dedup=[words]"], "data.split.dedup"),
        (["data.in_memory=maybe"], "data.in_memory"),
        (["data.shift=2"], "data.shift"),
        (["data.canaries.copies=[0]"], "data.canaries.copies"),
        (["data.canaries.copies=[1]", "data.canaries.count=0"], "data.canaries.count"),
        (["+data.colour=red"], "data.colour"),
        (["data=webdataset"], "data.path"),
        (["data=audit"], "data.members"),
        (["data=audit", "data.members={shards}"], "data.nonmembers_path"),
        (["data=audit", "data.members={shards}", "data.nonmembers=/n"], "data.nonmembers"),
        (["data=audit", "data.members={shards}", "data.nonmembers_path={shards}"], "target"),
        (["data=glyphs", "data.nonmembers=ood"], "data.nonmembers"),
        (["train.epochs=0"], "train.epochs"),
        (["train.lr=-1"], "train.lr"),
        (["train.batch_size=1.5"], "train.batch_size"),
        (["+train.momentum=0.9"], "train.momentum"),
        (["trainer.devices=0"], "trainer.devices"),
        (["logger=wandb", "logger.mode=loud"], "logger.mode"),
        (["seed=-1"], "seed"),
        (["n_bootstrap=-1"], "n_bootstrap"),
        (["defense=dp_sgd", "defense.delta=2"], "defense.delta"),
        (["defense=embedding_noise", "+defense.mean=0"], "defense.mean"),
        (["target=checkpoint"], "target.path"),
        (["target=checkpoint", "target.path={ckpt}", "target.pretrained=y"], "target.path"),
        (["target=checkpoint", "target.path={ckpt}", "attack=lira"], "target.train_shadows"),
        (["analysis.dataset_inference.alpha=2"], "analysis.dataset_inference.alpha"),
        (["+attack.csa.scale=2"], "attack.csa.scale"),
        (["analysis.calibrated.fpr_targets=[0.01,-0.001]"], "analysis.calibrated.fpr_targets"),
        (["analysis.calibrated.fpr_targets=[]"], "analysis.calibrated.fpr_targets"),
        (["analysis.calibrated.fpr_targets=[1]"], "analysis.calibrated.fpr_targets"),
        (["data.split.scored=test"], "data.split.scored"),
        (["data.split.scored=validation"], "data.split.scored"),
        (["data.split.validation=-1"], "data.split.validation"),
        (["target=checkpoint", "target.path={missing}"], "target.path"),
        (["data=webdataset", "data.path={missing}"], "data.path"),
        (["data=audit", "data.members={missing}", "data.nonmembers_path={shards}"], "data.members"),
        (
            ["data=audit", "data.members={shards}", "data.nonmembers_path={shards}"]
            + ["data.members_uids={missing}", "target=checkpoint", "target.path={ckpt}"],
            "data.members_uids",
        ),
        (["trainer=ddp_cpu", "data.size=1001"], "data.size"),
        (["trainer=ddp_cpu", "train.batch_size=255"], "train.batch_size"),
        (["data.corpus.size=2k", "data.split.holdout=1800"], "data.split.eval_size"),
        (
            ["data.corpus.size=2k", "data.split.holdout=1800", "data.split.known_size=1500"],
            "data.split.known_size",
        ),
    ],
)
def test_bad_values_are_refused_before_any_work_naming_the_key(tmp_path, files, overrides, key):
    cfg = compose_config(*(o.format(**files) for o in overrides), f"paths.root_dir={tmp_path}")
    with pytest.raises(ConfigError) as err:
        JobSpec.parse(cfg)
    assert err.value.key == key, str(err.value)
    assert "\n" not in str(err.value)
    assert not any(tmp_path.iterdir())  # nothing generated, indexed or written


def test_checkpoint_target_takes_path_or_tag(files):
    assert (
        FromCheckpoint(path=files["ckpt"]).path == files["ckpt"]
        and FromCheckpoint(pretrained="tag").trains_shadows is False
    )
    job = JobSpec.parse(
        compose_config(
            "target=checkpoint",
            f"target.path={files['ckpt']}",
            "data=audit",
            f"data.members={files['shards']}",
            f"data.nonmembers_path={files['shards']}",
        )
    )
    assert isinstance(job.data, Audit) and job.data.size is None and job.data.condition == "audit"
    assert job.n is None  # a checkpoint's N is target.size, unknown here


@pytest.mark.slow
def test_run_py_refuses_in_one_line_with_status_2_and_leaves_no_folder(tmp_path):
    env = {**os.environ, "MIA_ROOT": str(tmp_path)}
    env.pop("HYDRA_FULL_ERROR", None)
    for args, key in (
        (["target=checkpoint"], "target.path"),
        (["data=audit"], "data.members"),
        (["train.epochs=0"], "train.epochs"),
    ):
        got = subprocess.run(
            [sys.executable, "run.py", *args, "logger=none"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert got.returncode == 2, got.stderr
        lines = got.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {key}"), got.stderr
        assert "Traceback" not in got.stderr + got.stdout
    runs = tmp_path / "outputs" / "runs"
    assert not runs.exists() or not any(runs.iterdir())
    assert not (tmp_path / ".cache").exists()
