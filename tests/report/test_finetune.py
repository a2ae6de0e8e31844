"""mia/report/finetune.py: fine-tuned minus from-scratch differences paired by seed, with t
intervals over the seeds and one Holm family."""

import numpy as np
import pytest

from mia.report import finetune


def _row(init, size, seed, auc, gap=0.01):
    return {
        "init": init,
        "epochs": 10,
        "size": size,
        "seed": seed,
        "nonmembers": "iid",
        "defense": "none",
        "gap_value": gap,
        "csa/auc": auc,
        "utility/i2t_r1": 0.2,
        "utility/t2i_r1": 0.4,
        "loss_gap_value": -gap,
        "d_prime_value": None,
    }


def _sweep(lift, noise=0.002, seeds=4):
    rng = np.random.default_rng(0)
    rows = []
    for n in (1000, 4000):
        for s in range(seeds):
            base = 0.6 + rng.normal(0, 0.02)  # a seed's own level, shared by both arms
            rows.append(_row("scratch", n, s, base))
            rows.append(_row("base-abc", n, s, base + lift + rng.normal(0, noise)))
    return rows


def test_a_consistent_lift_is_found_paired_by_seed_and_adjusted_in_one_family():
    out = finetune.finetune_rows(_sweep(lift=0.05), "csa")
    auc = [r for r in out if r["column"] == "csa_auc"]
    assert [r["size"] for r in auc] == [1000, 4000]
    for r in auc:
        assert r["delta"] == pytest.approx(0.05, abs=0.005)
        assert r["delta_ci_lo"] > 0 and r["p_holm"] < 0.05 and r["p_holm"] >= r["p"]
    # d' is absent from these results: no row, rather than a difference of Nones
    assert {r["column"] for r in out} == {"csa_auc", "gap", "loss_gap", "recall1"}
    assert "| base-abc | 10 | 1000 | csa AUC | 4 |" in "\n".join(finetune.markdown(out))
    assert "higher" in "\n".join(finetune.markdown(out))


def test_no_lift_gives_no_verdict_and_unpaired_seeds_are_left_out():
    rows = _sweep(lift=0.0, noise=0.02)
    rows = [r for r in rows if not (r["init"] == "scratch" and r["seed"] == 3)]
    out = finetune.finetune_rows(rows, "csa")
    auc = [r for r in out if r["column"] == "csa_auc"]
    assert all(r["seeds"] == 3 for r in auc)  # seed 3 has no scratch partner
    assert all(r["delta_ci_lo"] < 0 < r["delta_ci_hi"] for r in auc)
    assert "higher" not in "\n".join(finetune.markdown(auc))


def test_applies_only_where_both_arms_are_present():
    assert finetune.applies(_sweep(0.0))
    assert not finetune.applies([r for r in _sweep(0.0) if r["init"] == "scratch"])
