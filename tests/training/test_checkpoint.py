"""Targets from a checkpoint (mia/checkpoint.py): every trained target is exported as an open_clip
folder, and auditing that export, the raw model.pt or an open_clip training checkpoint with
target=checkpoint gives the very scores the trained path gave."""

import json
from pathlib import Path

import open_clip
import pytest
import torch

from mia.pipeline import run
from tests.helpers.shards import write_subset

pytestmark = pytest.mark.slow

# Every attack that needs no shadow models.
NO_SHADOWS = "attack=[csa,aea,mcd,wsa,wsa_gomez,blind,clmia,gradnorm,paramgrad]"
FAST = [
    "attack.aea.repeats=1",
    "attack.mcd.passes=2",
    "attack.clmia.epochs=2",
    "attack.clmia.head_epochs=20",
]


def _scores(path):
    res = json.loads(Path(path).read_text())
    return res, {
        name: (m["auc"], m["auc_ci95"], m["tpr_at_fpr_1e-2"], res["roc"][name]["tpr"])
        for name, m in res["attacks"].items()
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory, default_job):
    """A target trained by mia (the default job's, from its cache), scored by every attack that
    needs no shadows."""
    from hydra import compose, initialize_config_dir

    from tests.helpers.caches import seed_cache
    from tests.helpers.config import CONF, SMALL

    root = tmp_path_factory.mktemp("roundtrip")
    seed_cache(default_job[0].paths.cache_dir, root / ".cache")

    def make(*overrides, attack=NO_SHADOWS, small=SMALL):
        fast = FAST if attack == NO_SHADOWS else []
        with initialize_config_dir(config_dir=CONF, version_base="1.3"):
            return compose(
                "config",
                overrides=[
                    *small,
                    f"paths.root_dir={root}",
                    "logger=none",
                    attack,
                    *fast,
                    *overrides,
                ],
            )

    return make, _scores(run(make()))


def test_export_loads_in_plain_open_clip(trained):
    _, (res, _) = trained
    folder = Path(res["target"]["open_clip"])
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}")
    ours = torch.load(res["target"]["checkpoint"], weights_only=True)
    theirs = model.state_dict()
    assert set(ours) == set(theirs) and all(torch.equal(ours[k], theirs[k]) for k in ours)
    tokens = open_clip.get_tokenizer(f"local-dir:{folder}")(["a red circle"])
    assert tokens.shape == (1, 40)  # the tiny model's own context length travelled with the config


@pytest.mark.parametrize(
    "form", ["exported folder", "plain state dict", "open_clip training checkpoint"]
)
def test_checkpoint_target_gives_the_trained_scores(trained, form, tmp_path):
    make, (res, expected) = trained
    if form == "exported folder":
        path = res["target"]["open_clip"]
    elif form == "plain state dict":
        path = res["target"]["checkpoint"]
    else:
        # what open_clip's trainer writes under DDP: module. prefixes, beside epoch / name /
        # optimizer
        state = torch.load(res["target"]["checkpoint"], weights_only=True)
        path = tmp_path / "epoch_latest.pt"
        torch.save(
            {
                "epoch": 2,
                "name": "tiny",
                "state_dict": {f"module.{k}": v for k, v in state.items()},
                "optimizer": {},
            },
            path,
        )
    # Every attack on the export; the other forms load the same weights, so CSA and the gap show it.
    attack = NO_SHADOWS if form == "exported folder" else "attack=csa"
    got, scores = _scores(run(make("target=checkpoint", f"target.path={path}", attack=attack)))
    assert got["target"]["source"] == "checkpoint" and got["target"]["trained_uids"] is None
    assert scores == {name: expected[name] for name in scores} and len(scores) == (
        9 if attack == NO_SHADOWS else 1
    )
    assert got["gap"] == res["gap"]


def test_shadow_attacks_on_a_checkpoint_are_refused_before_any_work(trained, tmp_path):
    make, (res, _) = trained
    cfg = make(
        "target=checkpoint",
        f"target.path={res['target']['open_clip']}",
        f"paths.root_dir={tmp_path}",
        attack="attack=lira",
    )
    with pytest.raises(
        ValueError, match=r"attack\.lira needs shadow models.*target\.train_shadows=true"
    ):
        run(cfg)
    assert not (tmp_path / ".cache").exists()  # nothing generated, nothing loaded


def test_a_missing_checkpoint_names_the_key(trained, tmp_path):
    make, _ = trained
    with pytest.raises(ValueError, match="target.path=.*no such file"):
        run(make("target=checkpoint", f"target.path={tmp_path / 'nope.pt'}", attack="attack=csa"))


def test_audit_a_checkpoint_with_member_and_nonmember_folders(trained, tmp_path):
    """The README's command: target=checkpoint on an exported folder, data=audit on two shard
    folders (the target's training pairs, and pairs it never saw), narrowed by a uid list."""
    import numpy as np

    make, (res, _) = trained
    members = Path(res["target"]["trained_uids"]).read_text().split()
    shards = sorted(
        (Path(res["config"]["paths"]["cache_dir"]) / "corpus").glob("synthetic-iid-*/*.tar")
    )
    from mia.data.shards import build_index

    every = build_index(shards).uids
    unseen = np.setdiff1d(every, members)[:250]
    assert write_subset(shards, members, tmp_path / "members") == len(members)
    assert write_subset(shards, unseen, tmp_path / "nonmembers") == len(unseen)
    (tmp_path / "keep.txt").write_text("\n".join(members[:200]) + "\n")
    cfg = make(
        "target=checkpoint",
        f"target.path={res['target']['open_clip']}",
        "model=tiny",
        "data=audit",
        f"data.members={tmp_path / 'members'}",
        f"data.nonmembers_path={tmp_path / 'nonmembers'}",
        f"data.members_uids={tmp_path / 'keep.txt'}",
        "data.split.eval_size=50",
        "data.split.known_size=100",
        "data.split.aux_size=100",
        "n_bootstrap=50",
        attack="attack=csa",
        small=[],
    )
    got = json.loads(run(cfg).read_text())
    assert got["data"]["nonmembers"] == "audit" and got["data"]["member_pool"] == 200
    assert got["data"]["member_eval"] == got["data"]["nonmember_eval"] == 50
    assert 0 <= got["attacks"]["csa"]["auc"] <= 1
    # Every scored or attacker-held pair comes from the folder (and uid list) of its side.
    from mia.pipeline import prepare

    _, _, splits, _ = prepare(cfg)
    assert set(splits.member_eval) <= set(members[:200])
    held = np.concatenate(
        [splits.nonmember_eval, splits.nonmember_known, splits.aux_pool[~splits.aux_is_member]]
    )
    assert set(held) <= set(unseen) and set(splits.aux_pool[splits.aux_is_member]) <= set(
        members[:200]
    )
