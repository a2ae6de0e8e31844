"""mia/training/stage.py: the trained target comes back on the job's device, streamed members
travel as uint8 and train the very weights that members normalised in the loader worker train, and
a target fine-tuned from a checkpoint (target.init) starts from its weights."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from lightning.fabric.plugins.environments import LightningEnvironment

from mia.checkpoint import fingerprint
from mia.data.pairs import PairStream
from mia.data.shards import build_index, list_shards
from mia.data.synthetic import write_corpus
from mia.distributed import World, single
from mia.job import JobSpec
from mia.pipeline import run
from mia.training.spec import TrainSpec
from mia.training.stage import train_target
from mia.validate import ConfigError
from tests.helpers.config import compose_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    """(shards, 48 member uids) of a small corpus."""
    shards = list_shards(write_corpus(tmp_path_factory.mktemp("corpus"), 64, shard_size=16, seed=0))
    return shards, list(build_index(shards).uids[:48])


def _spec(*overrides):
    return TrainSpec.from_cfg(
        compose_config("debug=small", "train.batch_size=16", "train.epochs=2", *overrides)
    )


def test_the_target_comes_back_on_the_jobs_device(members, tmp_path):
    """Features and white-box attacks run where the job trains: train_target leaves the model on
    world.device (a GPU in a GPU job; the meta device stands in for it here), its files on the
    CPU."""
    shards, uids = members
    spec = _spec()
    trained = train_target(spec, shards, uids, tmp_path, "k")
    assert next(trained.model.parameters()).device == single(spec.trainer).device
    elsewhere = World(device=torch.device("meta"), cluster=LightningEnvironment())
    again = train_target(spec, shards, uids, tmp_path, "k", world=elsewhere)
    assert again.cache_hit and {p.device.type for p in again.model.parameters()} == {"meta"}
    exported = torch.load(
        trained.dir / "open_clip" / "open_clip_pytorch_model.bin", weights_only=True
    )
    assert {t.device.type for t in exported.values()} == {"cpu"}


def test_streamed_members_shipped_as_uint8_train_the_weights_of_members_finished_in_the_worker(
    members, tmp_path, monkeypatch
):
    shards, uids = members
    spec = _spec("data.in_memory=false", "train.num_workers=0")
    seen = []
    finish = PairStream.finish

    def spy(self, batch):
        seen.append(batch[0].dtype)
        return finish(self, batch)

    monkeypatch.setattr(PairStream, "finish", spy)
    shipped = train_target(
        spec, shards, uids, tmp_path / "uint8", "k", export=False
    ).model.state_dict()
    assert seen and set(seen) == {torch.uint8}  # every batch travelled as uint8

    floats = []

    def in_worker(self, batch):  # images finished where they were decoded, as floats
        images, captions, positions = zip(*batch, strict=True)
        floats.append(self.preprocess.stack(images))
        return floats[-1], self.tokenizer(list(captions)), torch.as_tensor(positions)

    seen.clear()
    monkeypatch.setattr(PairStream, "collate", in_worker)
    finished = train_target(
        spec, shards, uids, tmp_path / "float", "k", export=False
    ).model.state_dict()
    assert (
        floats and {f.dtype for f in floats} == {torch.float32} and not seen
    )  # nothing left to finish
    assert shipped.keys() == finished.keys() and all(
        torch.equal(shipped[k], finished[k]) for k in shipped
    )


def test_a_target_fine_tuned_from_a_checkpoint_starts_from_its_weights_keyed_by_its_bytes(
    members, tmp_path
):
    shards, uids = members
    scratch = train_target(_spec(), shards, uids, tmp_path, "scratch")
    start = scratch.dir / "open_clip"
    assert "init" not in _spec().weights_key()  # from scratch: every key as before
    # at a learning rate of ~0, fine-tuning leaves the weights where target.init put them
    tuned = train_target(
        _spec(f"target.init={start}", "train.lr=1e-12"), shards, uids, tmp_path, "t"
    )
    assert not tuned.cache_hit
    before, after = scratch.model.state_dict(), tuned.model.state_dict()
    assert all(torch.allclose(before[k], after[k], atol=1e-6) for k in before)
    # keyed by the checkpoint's bytes, wherever they lie
    copy = shutil.copytree(start, tmp_path / "elsewhere")
    key = _spec(f"target.init={copy}").weights_key()
    assert key["init"] == fingerprint(start) and key == _spec(f"target.init={start}").weights_key()
    with pytest.raises(ConfigError, match=r"^target\.init='/nope\.pt': no such checkpoint"):
        JobSpec.parse(compose_config("debug=small", "logger=none", "target.init=/nope.pt"))


def test_a_fine_tuned_target_runs_end_to_end(make_cfg, small_target, default_job):
    """target.init from the default target's export: another target, trained from it, scored."""
    default = json.loads(Path(default_job[1]).read_text())
    got = json.loads(run(make_cfg(f"target.init={default['target']['open_clip']}")).read_text())
    assert got["target"]["cache_key"] != default["target"]["cache_key"]
    assert not got["target"]["cache_hit"] and got["config"]["target"]["init"]
    assert 0 <= got["attacks"]["csa"]["auc"] <= 1
