"""shadows.paths: reference models of the auditor's own, refused before any work where a file is
missing or their uid lists leave an evaluation pair without the IN / OUT models an attack needs.
That they score as the shadows they are: tests/test_pipeline.py."""

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mia.data.splits import EVAL_SETS, SCORED
from mia.job import JobSpec
from mia.pipeline import prepare, run
from mia.training import shadows
from mia.training.spec import SHADOW_SEEDS, TrainSpec
from mia.training.stage import initial_model
from mia.validate import ConfigError
from tests.helpers.attacks import make_attack


def _refs(folder: Path, lists) -> str:
    """shadows.paths=[...] of one reference per uid list: a checkpoint file (never loaded by the
    refusals) and the list as a .txt file."""
    entries = []
    for i, uids in enumerate(lists):
        weights, listed = folder / f"ref{i}.pt", folder / f"ref{i}.txt"
        weights.write_bytes(b"weights")
        listed.write_text("\n".join(uids) + "\n")
        entries.append(f"{{checkpoint: '{weights}', uids: '{listed}'}}")
    return f"shadows.paths=[{','.join(entries)}]"


def _pool(make_cfg) -> dict:
    _, _, splits, _ = prepare(make_cfg())
    return {name: list(getattr(splits, name)) for name in EVAL_SETS}


def test_a_missing_checkpoint_or_uid_list_is_refused_when_the_job_is_parsed(make_cfg, tmp_path):
    good = _refs(tmp_path, [["a"]])
    with pytest.raises(ConfigError, match=r"^attack\.lira\.shadows\.paths\[0\]\.checkpoint="):
        JobSpec.parse(make_cfg("attack=lira", good.replace("ref0.pt", "nope.pt")))
    with pytest.raises(
        ConfigError, match=r"^attack\.lira\.shadows\.paths\[0\]\.uids=.*no such file"
    ):
        JobSpec.parse(make_cfg("attack=lira", good.replace("ref0.txt", "nope.txt")))
    with pytest.raises(ConfigError, match=r"^attack\.lira\.shadows\.paths=\[\]: a non-empty list"):
        JobSpec.parse(make_cfg("attack=lira", "shadows.paths=[]"))
    with pytest.raises(ConfigError, match=r"^attack\.lira\.shadows\.paths\[0\]=.*checkpoint"):
        JobSpec.parse(make_cfg("attack=lira", f"shadows.paths=['{tmp_path / 'ref0.pt'}']"))
    assert not (tmp_path / ".cache").exists()  # nothing generated, nothing read


def test_reference_models_stand_in_for_shadows_a_checkpoint_target_cannot_train(make_cfg, tmp_path):
    (tmp_path / "target.pt").write_bytes(b"")  # the path must exist when the job is parsed
    job = JobSpec.parse(
        make_cfg(
            "attack=[lira,rmia]",
            "target=checkpoint",
            f"target.path={tmp_path / 'target.pt'}",
            _refs(tmp_path, [["a"], ["b"]]),
        )
    )
    assert [len(a.shadows.paths) for a in job.attacks.values()] == [2, 2]
    assert job.attacks["lira"].shadows.paths[1].trained.tolist() == ["b"]


def test_lists_that_leave_an_evaluation_pair_uncovered_are_refused_before_any_training(
    make_cfg, tmp_path, small_corpus
):
    pool = _pool(make_cfg)
    everything = [u for name in EVAL_SETS for u in pool[name]]
    halves = [everything[::2], everything[1::2]]
    # every pair IN both: online LiRA has no OUT model for any scored pair
    with pytest.raises(
        ConfigError,
        match=r"^attack\.lira\.shadows\.paths='2 models': 200 of the 200 pairs of "
        r"member_eval\+nonmember_eval are OUT of fewer than 1 of them \(e\.g\. uid .+\), and lira "
        r"\(mode=online, variance=global\) needs each OUT of at least 1: list reference models not "
        r"trained on them, or set shadows.paths=null",
    ):
        run(make_cfg("attack=lira", _refs(tmp_path, [everything, everything])))
    # one scored pair in neither list: online LiRA has no IN model for it; offline needs none
    missing = [[u for u in half if u != pool["member_eval"][0]] for half in halves]
    with pytest.raises(ConfigError, match=r"1 of the 200 pairs .* are IN fewer than 1 of them"):
        run(make_cfg("attack=lira", _refs(tmp_path, missing)))
    # offline_a=auto attacks each reference with the others: at least 4
    with pytest.raises(ConfigError, match=r"rmia \(offline_a=auto\) needs at least 4 reference"):
        run(make_cfg("attack=rmia", _refs(tmp_path, halves)))
    assert not (tmp_path / ".cache" / "targets").exists()  # neither the target nor a model trained
    assert not (tmp_path / "outputs").exists()


def test_what_each_attack_needs_of_reference_models():
    lira = make_attack("lira").reference_needs()
    assert (lira.sets, lira.inside, lira.outside) == (SCORED, 1, 1)
    offline = make_attack("lira", mode="offline", variance="per_pair").reference_needs()
    assert (offline.inside, offline.outside) == (0, 2)
    assert make_attack("rmia", mode="online").reference_needs().outside == 0
    auto = make_attack("rmia").reference_needs()
    assert (auto.sets, auto.outside, auto.models, auto.mixed) == (EVAL_SETS, 2, 4, True)
    fixed = make_attack("rmia", offline_a=0.5).reference_needs()
    assert fixed.sets == (*SCORED, "nonmember_known") and fixed.outside == 1


def test_no_shadow_shares_a_seed_or_initial_weights_with_the_target_or_another(
    make_cfg, monkeypatch, tmp_path
):
    """Under shadows.size=target (shadows.seed 0, the target's seed too) and under shadows.size=pool
    (the job's seed): each shadow trains with a seed of its own, in a space no job seed reaches,
    and starts from weights neither the target's nor another shadow's."""
    spec = TrainSpec.from_cfg(make_cfg())
    assert spec.seed == 0
    trained = {}  # the spec each shadow's training was given
    monkeypatch.setattr(
        shadows,
        "train_target",
        lambda spec, _shards, uids, _dir, key, **_: trained.setdefault(key, spec),
    )
    uids = np.array([f"u{i:03d}" for i in range(40)])
    trainer = shadows.ShadowTrainer(spec, [], tmp_path, "target-key")
    seeds = {}
    for size in shadows.SIZES:
        settings = shadows.ShadowSettings(size, None, 0)
        shadow_set = trainer.shadows(uids, {}, 4, settings, spec.seed, 20)
        specs = list(shadow_set)  # "trains" each: the spec it was given
        assert [s.seed for s in specs] == shadow_set.seeds
        seeds[size] = shadow_set.seeds
    every = seeds["target"] + seeds["pool"]
    assert min(every) >= SHADOW_SEEDS and len(set(seeds["target"])) == len(seeds["target"])
    with pytest.raises(ConfigError, match=r"^seed="):  # no job's seed reaches them
        JobSpec.parse(make_cfg(f"seed={min(every)}"))

    def initial(seed):
        return initial_model(replace(spec, seed=seed)).state_dict()

    target = initial(spec.seed)
    weights = [initial(s) for s in seeds["target"]]
    again = initial(spec.seed)
    assert all(torch.equal(target[k], again[k]) for k in target)  # the build is seeded
    for i, w in enumerate(weights):
        assert not all(torch.equal(w[k], target[k]) for k in target)
        assert not any(all(torch.equal(w[k], other[k]) for k in w) for other in weights[:i])


def test_the_training_stage_trains_each_reference_set_once_in_the_attacks_order(
    make_cfg, monkeypatch, tmp_path
):
    """train_references: lira and rmia of equal settings share one set, trained (here: recorded)
    before any attack runs, shadow by shadow in the order the attack would iterate them; an attack
    with more shadows reuses the first ones; attacks without shadows get none, and a job with none
    trains nothing."""
    spec = TrainSpec.from_cfg(make_cfg())
    order = []

    def fake(spec, _shards, uids, _dir, key, **_):
        hit = key in order
        order.append(key)
        return SimpleNamespace(cache_hit=hit, key=key)

    monkeypatch.setattr(shadows, "train_target", fake)
    sets = {
        name: SimpleNamespace(uids=np.array([f"{name}{i:02d}" for i in range(10)]))
        for name in EVAL_SETS
    }
    trainer = shadows.ShadowTrainer(spec, [], tmp_path, "target-key")
    pooled = {"size": "pool", "pool": None, "seed": 0}
    attacks = {
        "csa": make_attack("csa"),
        "lira": make_attack("lira", num_shadows=2, shadows=pooled),
        "rmia": make_attack("rmia", num_shadows=2, shadows=pooled),
        "more": make_attack("lira", num_shadows=4, shadows=pooled),
    }
    found = shadows.train_references(attacks.values(), trainer, sets, 0, 20)
    key = shadows.reference_key
    assert list(found) == [key(2, attacks["lira"].shadows), key(4, attacks["more"].shadows)]
    two, four = found.values()
    assert isinstance(two, shadows.ShadowSet) and (two.trained, four.trained) == (2, 2)
    assert order[:2] == order[2:4]  # the 4-shadow set found the first two in the cache
    assert [s.key for s in two] == order[:2]  # the attacks iterate the trained shadows
    assert shadows.train_references([attacks["csa"]], trainer, sets, 0, 20) == {}
    plan = shadows.ShadowPlan({"csa": attacks["csa"]}, spec, None, tmp_path, 20)
    assert plan.train([], None, sets, 0) == {}  # no target needed: nothing trains


def test_jobs_sharing_shadows_split_them_and_wait_only_at_the_end(make_cfg, monkeypatch, tmp_path):
    """ShadowSet.fit takes the first shadow no other job is building (cache.busy on its folder) and
    comes back to the busy ones last: here another job holds shadow 0, so this one trains 1-3
    first, then finds 0 done. With none busy it keeps the attack's order."""
    spec = TrainSpec.from_cfg(make_cfg())
    trainer = shadows.ShadowTrainer(spec, [], tmp_path, "target-key")
    sets = {
        name: SimpleNamespace(uids=np.array([f"{name}{i:02d}" for i in range(10)]))
        for name in EVAL_SETS
    }
    uids, offsets = shadows.pool_of(sets)
    pooled = shadows.ShadowSettings.parse(size="pool", pool=None, seed=0)
    keys = [
        trainer.pool_key(sorted(uids[half]), shadows.shadow_tag(0, m), shadows.shadow_seed(0, m))
        for m, half in enumerate(shadows.halves(uids, 4, 0))
    ]
    elsewhere, order = {keys[0]}, []

    def fake(spec, _shards, uids, _dir, key, **_):
        order.append(key)
        elsewhere.discard(key)  # the other job finished it while this one waited
        return SimpleNamespace(cache_hit=key == keys[0], key=key)

    monkeypatch.setattr(shadows, "train_target", fake)
    monkeypatch.setattr(shadows, "cache_busy", lambda path: path.name in elsewhere)
    got = trainer.shadows(uids, offsets, 4, pooled, 0, 20).fit()
    assert order == keys[1:] + keys[:1] and got.trained == 3
    order.clear()
    trainer.shadows(uids, offsets, 4, pooled, 0, 20).fit()
    assert order == keys
