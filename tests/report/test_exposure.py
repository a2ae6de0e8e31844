"""The exposure analysis (mia/report/exposure.py) on score tables whose rankings are known:
identical rankings overlap fully and beat the null, random ones sit on it, the null is seeded,
comparisons across N use only the members both jobs scored, the non-members' overlap controls the
finding, and what the members exposed at every seed share."""

from types import SimpleNamespace

import numpy as np
import pytest

from mia.data.splits import MEMBER_EVAL, NONMEMBER_EVAL
from mia.evaluation import scores
from mia.report import exposure
from mia.report.exposure import (
    against_null,
    analyse,
    caption_attributes,
    null_overlaps,
    scores_by_pair,
    top_rows,
)
from mia.report.rows import calibrated


def table(member_scores, uids=None, captions=None, nonmembers=100, extra=None):
    """A scores.parquet table: members `uids` (m0, m1, ... by default) scored `member_scores` by
    csa, and non-members n0, n1, ... scored 0, or `nonmembers` where it is an array of scores;
    `extra` {attack: (member scores, non-member scores)} adds further attacks."""
    member_scores = np.asarray(member_scores, float)
    nonmember_scores = np.zeros(nonmembers) if np.isscalar(nonmembers) else np.asarray(nonmembers)
    nonmembers = nonmember_scores.size
    uids = uids or [f"m{i}" for i in range(member_scores.size)]
    sets = {
        MEMBER_EVAL: SimpleNamespace(uids=uids, cos=member_scores),
        NONMEMBER_EVAL: SimpleNamespace(
            uids=[f"n{i}" for i in range(nonmembers)], cos=nonmember_scores
        ),
    }
    caps = {
        MEMBER_EVAL: captions or ["a red circle"] * len(uids),
        NONMEMBER_EVAL: ["a blue square"] * nonmembers,
    }
    return scores.frame(sets, caps, {"csa": (member_scores, nonmember_scores), **(extra or {})})


def row(tab, seed=0, size=1000, epochs=40, tpr=0.01):
    """A report row as rows.load_rows makes it, its scores table already read; csa's TPR at 0.1% FPR
    in its results.json is `tpr`, on too few non-members to resolve it."""
    record = {
        "attacks": {
            "csa": {
                "tpr_at_fpr_1e-3": tpr,
                "tpr_at_fpr_1e-3_ci95": [0.0, 2 * tpr],
                "low_fpr_resolved": {"1e-2": True, "1e-3": False},
            }
        }
    }
    return {
        "nonmembers": "iid",
        "shift": 0.0,
        "epochs": epochs,
        "size": size,
        "model": "tiny",
        "params": 1,
        "defense": "none",
        "weight_decay": 0.1,
        "init": "scratch",
        "seed": seed,
        "_table": tab,
        "_results": record,
        "_reference": "csa",  # exposure ranks by the reference attack's scores by default
        "_calibrated": ["lira"],  # its attacks calibrated per pair (Attack.calibrated_per_pair)
    }


def test_null_is_seeded_and_centred_on_chance():
    a = null_overlaps(500, 50, 2, 2000, np.random.default_rng(0))
    assert np.array_equal(a, null_overlaps(500, 50, 2, 2000, np.random.default_rng(0)))
    assert not np.array_equal(a, null_overlaps(500, 50, 2, 2000, np.random.default_rng(1)))
    assert a.mean() == pytest.approx(50 * 50 / 500, rel=0.05)  # the hypergeometric mean k^2 / n
    assert null_overlaps(500, 50, 3, 500, np.random.default_rng(0)).mean() == pytest.approx(
        5, rel=0.1
    )


def test_identical_rankings_overlap_fully_and_random_ones_sit_on_the_null():
    rng = np.random.default_rng(0)
    ranked = rng.normal(size=500)
    same = analyse([row(table(ranked), seed=s) for s in range(3)], draws=2000)
    (o,) = same["across_seeds"]
    assert o["overlap"] == 50 and o["null_mean"] == pytest.approx(5, rel=0.1)
    assert (
        o["p_value"] == pytest.approx(1 / 2001) and o["seeds"] == [0, 1, 2] and o["n_shared"] == 500
    )
    (p,) = same["persistent"]
    assert p["n"] == 50 and p["chance"] == pytest.approx(500 * 0.1**3)
    assert set(p["uids"]) == {f"m{i}" for i in np.argsort(-ranked)[:50]}

    noise = analyse([row(table(rng.normal(size=500)), seed=s) for s in range(4)], draws=2000)
    (o,) = noise["across_seeds"]
    assert abs(o["overlap"] - o["null_mean"]) < 2.5 and o["p_value"] > 0.05
    assert noise["persistent"][0]["n"] <= 2  # chance: 500 * 0.1^4 = 0.05


def test_the_permutation_p_value_is_reproducible():
    rng = np.random.default_rng(3)
    tops = [set(rng.choice(500, 50, replace=False)) for _ in range(2)]
    first = against_null(tops, 500, 50, 1000, np.random.default_rng(7))
    assert first == against_null(tops, 500, 50, 1000, np.random.default_rng(7))
    assert 0 < first["p_value"] <= 1


def test_across_sizes_compares_only_the_members_both_jobs_scored():
    """The larger job scores 50 extra members, all above the shared ones: among the shared members
    its ranking is the smaller job's, so the top 50 agree fully."""
    ranked = np.random.default_rng(1).normal(size=200)
    small = table(ranked, uids=[f"m{i}" for i in range(200)])
    large = table(np.r_[ranked, np.full(50, 10.0)], uids=[f"m{i}" for i in range(250)])
    uids, matrix = scores_by_pair([row(large)], "csa", 1)
    assert {uids[i] for i in top_rows(matrix, 50)[0]} == {f"m{i}" for i in range(200, 250)}
    out = analyse([row(small, size=1000), row(large, size=4000, tpr=0.03)], draws=500)
    (o,) = out["across_sizes"]
    assert (o["size"], o["to_size"], o["seed"], o["n_shared"]) == (1000, 4000, 0, 200)
    assert (
        o["overlap"] == 50
        and o["null_mean"] == pytest.approx(12.5, rel=0.1)
        and o["p_value"] < 0.01
    )
    assert out["across_seeds"] == []
    (low,) = out["tpr_at_fpr_1e-3_at_largest_n"]  # quoted from the largest N's results.json
    assert (low["size"], low["tpr"], low["ci95"], low["resolved"]) == (
        4000,
        0.03,
        [0.0, 0.06],
        False,
    )


def test_persistent_members_captions_are_compared_with_the_others():
    ranked = np.arange(300, dtype=float)[::-1]  # m0 scores highest
    captions = [
        f"a very long caption with zyx{i} words" if i < 50 else "a circle" for i in range(300)
    ]
    out = analyse([row(table(ranked, captions=captions), seed=s) for s in range(2)], draws=200)
    (p,) = out["persistent"]
    assert p["n"] == 50
    words, rare = p["attributes"]["caption_words"], p["attributes"]["rare_words"]
    assert words["chosen_mean"] == 7 and words["others_mean"] == 2 and words["p_value"] < 1e-6
    assert rare["chosen_mean"] == 1 and rare["others_mean"] == 0
    assert out["attributes_unavailable"] and "image" in out["attributes_unavailable"][0]


def test_rare_words_are_rare_among_the_jobs_captions():
    tab = table(np.zeros(200), captions=["a red circle"] * 199 + ["a red glyph"])
    attrs = caption_attributes(tab)
    assert (
        attrs["rare_words"]["m199"] == 1 and attrs["rare_words"]["m0"] == 0
    )  # glyph: 1 of 300 captions
    assert attrs["caption_words"]["m0"] == 3


def test_nothing_to_compare_and_the_markdown():
    assert (
        analyse([row(table(np.zeros(40)), seed=s) for s in range(2)]) is None
    )  # 40 members: fewer than k
    assert analyse([row(table(np.zeros(500)))]) is None  # one job
    out = analyse([row(table(np.arange(500.0)), seed=s) for s in range(2)], draws=100)
    md = "\n".join(exposure.markdown(out))
    assert "| 1000 | 40 | 2 | 500 | 50.0 |" in md and "caption words" in md
    assert exposure.markdown(None) == []


def test_top_rows_rank_members_as_scores_most_exposed_does():
    ranked = np.round(np.random.default_rng(4).normal(size=300), 1)  # ties broken by file order
    tab = table(ranked)
    uids, matrix = scores_by_pair([row(tab)], "csa", 1)
    assert {uids[i] for i in top_rows(matrix, 50)[0]} == set(scores.most_exposed(tab, 50)["uid"])


def seeds_of(rng, easy_members, easy_nonmembers, n=500, seeds=3, extra=None):
    """One job per seed: each pair scores a per-pair easiness (fixed across seeds where planted:
    `easy_members`, `easy_nonmembers`) plus fresh noise per seed; members sit 0.5 higher."""
    fixed_m, fixed_n = rng.normal(size=n), rng.normal(size=n)
    jobs = []
    for s in range(seeds):
        m = 0.5 + (3 * fixed_m if easy_members else 0) + rng.normal(size=n)
        nm = (3 * fixed_n if easy_nonmembers else 0) + rng.normal(size=n)
        jobs.append(row(table(m, nonmembers=nm, extra=extra and extra(m, nm)), seed=s))
    return jobs


def test_non_members_as_stable_as_members_give_no_members_stay_exposed_finding():
    """Both sides' top 50 are the same pairs every seed: the members' overlap beats chance, but
    the non-members' does as well, so it reflects easy pairs, not membership."""
    out = analyse(seeds_of(np.random.default_rng(0), True, True), draws=200)
    (o,) = out["across_seeds"]
    assert o["p_value"] < 0.01 and o["overlap"] > 20  # far above chance (5)
    assert o["nonmembers"]["overlap"] > 20 and o["nonmembers"]["n_shared"] == 500
    c = o["control"]
    assert c["p_value"] > exposure.ALPHA and c["ci95"][0] < 0 < c["ci95"][1]
    assert o["finding"] == exposure.EASY
    assert out["persistent"][0]["nonmembers_n"] > 5
    md = "\n".join(exposure.markdown(out))
    assert exposure.EASY in md and exposure.EXPOSED not in md


def test_members_alone_stable_give_the_members_stay_exposed_finding():
    out = analyse(seeds_of(np.random.default_rng(1), True, False), draws=200)
    (o,) = out["across_seeds"]
    assert o["nonmembers"]["overlap"] < 10  # chance alone: 5
    c = o["control"]
    assert c["p_value"] < 0.01 and c["ci95"][0] > 0 and c["difference"] > 15
    assert o["finding"] == exposure.EXPOSED
    assert exposure.EXPOSED in "\n".join(exposure.markdown(out))


def test_random_rankings_find_chance_and_the_control_is_seeded():
    jobs = seeds_of(np.random.default_rng(2), False, False)
    out = analyse(jobs, draws=200)
    assert out["across_seeds"][0]["finding"] == exposure.CHANCE
    assert analyse(jobs, draws=200) == out
    assert (
        analyse(jobs, draws=200, seed=1)["across_seeds"][0]["control"]
        != (out["across_seeds"][0]["control"])
    )


def test_the_control_is_repeated_on_calibrated_lira_scores():
    """CSA's top members are stable easy pairs on both sides; LiRA, calibrated per pair, keeps the
    members' stability only: the finding differs by attack."""

    def lira(member, nonmember):  # easiness removed, a member-only stable part kept
        return {
            "lira": (member_only + rng.normal(size=member.size), rng.normal(size=nonmember.size))
        }

    rng = np.random.default_rng(3)
    member_only = 3 * rng.normal(size=500)
    out = analyse(seeds_of(rng, True, True, extra=lira), draws=200)
    assert out["across_seeds"][0]["finding"] == exposure.EASY
    (c,) = out["calibrated"]
    assert c["attack"] == "lira" and c["across_seeds"][0]["finding"] == exposure.EXPOSED
    assert "Control, lira scores" in "\n".join(exposure.markdown(out))
    assert analyse(seeds_of(rng, True, True), draws=50)["calibrated"] == []  # no lira column
    jobs = seeds_of(rng, True, True, extra=lira)
    for r in jobs:
        r["_calibrated"] = []  # a lira column, but not from an attack calibrated per pair
    assert analyse(jobs, draws=50)["calibrated"] == []


def test_calibrated_attacks_are_found_by_their_trait():
    """The rows name a job's attacks calibrated per pair by their class's trait, whatever the
    config calls them."""
    lira, csa = "mia.attacks.lira.LiRA", "mia.attacks.csa.CSA"
    record = {
        "config": {
            "attack": {
                "mine": {"_target_": lira},
                "other": {"_target_": csa},
                "unscored": {"_target_": lira},
            }
        },
        "attacks": {"mine": {}, "other": {}},
    }
    assert calibrated(record) == ["mine"]
