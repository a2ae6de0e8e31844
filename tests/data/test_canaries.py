"""Duplicated canaries (mia/data/canaries.py, docs/design.md §2.9): settings and refusals, where
they come from, the training list and its coverage check, the target key, and a job that scores
them."""

import json
from pathlib import Path

import numpy as np
import pytest

from mia.data import canaries
from mia.data.pairs import load_raw
from mia.evaluation.scoring import score_canaries
from mia.pipeline import prepare, run
from mia.training.spec import TrainSpec, target_key
from mia.validate import build


def _settings(copies=(1, 4), count=10, iid=True, in_memory=True, audit=False):
    return canaries.settings(
        {"copies": list(copies), "count": count}, iid=iid, in_memory=in_memory, audit=audit
    )


def test_no_canaries_by_default(make_cfg):
    cfg = make_cfg()
    assert list(cfg.data.canaries.copies) == [] and build(cfg.data, "data").canaries is None
    assert canaries.training_uids(["a", "b"], None) == ["a", "b"]


@pytest.mark.parametrize(
    "change, key",
    [
        ({"copies": [1, 1]}, "data.canaries.copies"),
        ({"copies": [0]}, "data.canaries.copies"),
        ({"count": 0}, "data.canaries.count"),
        ({"iid": False}, "i.i.d. non-members only"),
        ({"in_memory": False}, "data.in_memory=true"),
        ({"audit": True}, "data=audit"),
    ],
)
def test_bad_settings_are_refused_naming_the_key(change, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        _settings(**change)


def test_canaries_are_spare_held_out_pairs_the_same_at_every_size(make_cfg, small_corpus):
    cfg = make_cfg("data.canaries.copies=[1,4,16]", "data.canaries.count=30")
    _, _, splits, _ = prepare(cfg)
    c = canaries.draw(build(cfg.data, "data").canaries, splits)
    assert list(c.groups) == [1, 4, 16] and all(len(g) == 30 for g in c.groups.values())
    assert len(set(c.uids)) == 90
    for name in ("members", "member_eval", "nonmember_eval", "nonmember_known", "aux_pool"):
        assert not set(c.uids) & set(getattr(splits, name)), name
    _, _, other, _ = prepare(
        make_cfg("data.canaries.copies=[1,4,16]", "data.canaries.count=30", "data.size=200")
    )
    assert (canaries.draw(build(cfg.data, "data").canaries, other).uids == c.uids).all()
    with pytest.raises(ValueError, match="data.canaries.count"):
        canaries.draw(
            build(
                make_cfg("data.canaries.copies=[1,4,16]", "data.canaries.count=1000").data, "data"
            ).canaries,
            splits,
        )


def test_training_list_and_coverage_count_copies():
    c = canaries.Canaries(2, {1: np.array(["c1", "c2"]), 3: np.array(["c3", "c4"])})
    uids = canaries.training_uids(np.array(["m1", "m2"]), c)
    assert uids == ["m1", "m2", "c1", "c2"] + ["c3"] * 3 + ["c4"] * 3
    canaries.check_coverage(
        uids, np.full(len(uids), 5), 5
    )  # every position T times: c3 seen 15 times
    seen = np.full(len(uids), 5)
    seen[-1] = 4
    with pytest.raises(RuntimeError, match="c4: 14 times, expected 3 x 5"):
        canaries.check_coverage(uids, seen, 5)


def test_a_target_trained_on_other_canaries_is_refused(tmp_path):
    c = canaries.Canaries(2, {1: np.array(["c1", "c2"]), 3: np.array(["c3", "c4"])})
    good = tmp_path / "good.txt"
    good.write_text("\n".join(canaries.training_uids(["m1"], c)) + "\n")
    canaries.check_trained(good, c)
    other = canaries.Canaries(2, {1: np.array(["c1", "c2"]), 3: np.array(["c3", "c5"])})
    with pytest.raises(ValueError, match="data.canaries.*eval_size"):
        canaries.check_trained(good, other)


def test_target_key_holds_canaries_only_when_there_are_some(make_cfg):
    cfg = make_cfg()
    spec = TrainSpec.from_cfg(cfg)
    plain = target_key(spec, "fp", cfg.data.split, cfg.data.size)
    assert target_key(spec, "fp", cfg.data.split, cfg.data.size, canaries=None) == plain
    with_c = target_key(
        spec, "fp", cfg.data.split, cfg.data.size, canaries={"copies": [1], "count": 10}
    )
    assert with_c != plain
    assert with_c != target_key(
        spec, "fp", cfg.data.split, cfg.data.size, canaries={"copies": [4], "count": 10}
    )


def test_repeated_uids_are_read_once_and_repeated(make_cfg, small_corpus):
    members, _, splits, _ = prepare(make_cfg())
    uids = list(splits.members[:3])
    images, captions = load_raw(members.shards, [uids[0], uids[1], uids[0], uids[2], uids[0]])
    assert captions[0] == captions[2] == captions[4] != captions[1]
    assert np.array_equal(np.asarray(images[0]), np.asarray(images[4]))


@pytest.mark.slow
def test_job_scores_each_copy_count_as_a_member_set(make_cfg, small_corpus):
    # 16 copies x 10 epochs against 1 x 10: the more copies, the better CSA separates the group.
    cfg = make_cfg(
        "data.canaries.copies=[1,16]", "data.canaries.count=40", "train.epochs=10", "attack=csa"
    )
    res = json.loads(Path(run(cfg)).read_text())
    c = res["canaries"]
    assert c["copies"] == [1, 16] and c["count"] == 40 and c["skipped"] == {}
    one, sixteen = c["attacks"]["csa"]["copies=1"], c["attacks"]["csa"]["copies=16"]
    assert one["n_members"] == sixteen["n_members"] == 40 and one["n_nonmembers"] == 100
    assert sixteen["auc"] > one["auc"] and sixteen["auc"] > 0.9
    assert res["target"]["size"] == 300
    trained = Path(res["target"]["trained_uids"]).read_text().split()
    assert len(trained) == 300 + 40 + 16 * 40 and len(set(trained)) == 380
    assert res["attacks"]["csa"]["n_members"] == 100  # member_eval itself is untouched


def test_shadow_attacks_are_skipped():
    from tests.helpers.attacks import feature_context

    planted_features = feature_context(planted=True)

    class Shadowed:
        needs_shadows = True

    c = canaries.Canaries(1, {2: planted_features.uids("member_eval")[:1]})
    out = score_canaries(
        {"lira": Shadowed()}, planted_features, c, planted_features.features["member_eval"], 0
    )
    assert out["attacks"] == {} and "shadow" in out["skipped"]["lira"]
