"""Dataset inference (mia/evaluation/dataset_inference.py, docs/design.md §5.1): calibrated on the
null, powerful on a weak planted signal, Noether's prediction, refusals, and its place in
results.json and the sweep report."""

import json
from itertools import pairwise

import numpy as np
import pandas as pd
import pytest

from mia.evaluation.dataset_inference import (
    DEFAULTS,
    check_settings,
    dataset_inference,
    predicted_m,
)
from mia.evaluation.scores import FILENAME
from mia.report import build_report

FAST = {"draws": 1000}


def _scores(shift, n=500, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(shift, 1, n), rng.normal(0, 1, n)


@pytest.mark.parametrize("seed", [0, 1])
def test_null_sets_are_flagged_at_most_alpha(seed):
    # Members and non-members from one distribution: every flag is a false positive, on either side.
    member, non = _scores(0.0, seed=seed)
    r = dataset_inference(member, non, seed=seed)
    assert r["calibrated"] and r["fpr"] <= 0.01, r["fpr"]
    assert r["fpr_ci95"][0] <= 0.01 <= r["fpr_ci95"][1] or r["fpr_ci95"][1] < 0.01
    assert all(b["power"] <= 0.025 for b in r["by_m"]), [b["power"] for b in r["by_m"]]
    assert r["smallest_m"] is None


def test_ties_do_not_break_calibration():
    # Scores on a coarse grid (RMIA's 1/num_z steps, say): the tie correction keeps the null honest.
    member, non = (np.round(x * 2) / 2 for x in _scores(0.0, seed=3))
    assert dataset_inference(member, non, seed=3)["fpr"] <= 0.01


def test_weak_signal_adds_up_over_a_set():
    # AUC about 0.64 per pair: useless alone, but sets of a few dozen pairs are flagged.
    member, non = _scores(0.5)
    r = dataset_inference(member, non, FAST)
    assert 0.6 < r["auc"] < 0.7
    power = [b["power"] for b in r["by_m"]]
    assert power[0] < 0.1 and power[-1] == 1.0
    assert all(b >= a - 0.03 for a, b in pairwise(power))  # grows with m, up to draw noise
    assert 30 <= r["smallest_m"] <= 150 and r["calibrated"]


def test_noether_prediction_tracks_the_measured_m():
    for shift in (0.5, 1.0):
        member, non = _scores(shift, n=1000)
        r = dataset_inference(
            member, non, {"m": [4, 8, 12, 16, 20, 25, 30, 35, 40, 50, 60, 70, 80, 100, 120], **FAST}
        )
        # The measured m uses a finite reference (n0 - m), the prediction an unlimited one.
        finite = predicted_m(r["auc"], 0.01, 0.9, n_reference=1000 - r["smallest_m"])
        assert 0.6 * finite <= r["smallest_m"] <= 1.6 * finite, (r["smallest_m"], finite)
    assert (
        predicted_m(0.5, 0.01, 0.9) is None and predicted_m(0.55, 0.01, 0.9, n_reference=50) is None
    )
    assert predicted_m(0.6, 0.01, 0.9) == pytest.approx(
        ((2.3263 + 1.2816) / 0.1) ** 2 / 12, rel=1e-3
    )


def test_grid_is_cut_to_the_sets_and_draws_are_seeded():
    member, non = _scores(1.0, n=60)
    r = dataset_inference(member, non, {"m": [5, 30, 31, 100], **FAST})
    assert [b["m"] for b in r["by_m"]] == [5, 30] and r["max_m"] == 30
    assert all(b["reference"] == 60 - b["m"] for b in r["by_m"])
    assert r == dataset_inference(member, non, {"m": [5, 30, 31, 100], **FAST})
    assert r != dataset_inference(member, non, {"m": [5, 30, 31, 100], **FAST}, seed=1)


@pytest.mark.parametrize(
    "bad, key",
    [
        ({"m": [5, 2]}, "m"),
        ({"m": [0]}, "m"),
        ({"m": []}, "m"),
        ({"alpha": 1.5}, "alpha"),
        ({"power": 0}, "power"),
        ({"draws": 3}, "draws"),
        ({"mm": [2]}, "unknown"),
    ],
)
def test_bad_settings_name_their_key(bad, key):
    with pytest.raises(ValueError, match=f"analysis.dataset_inference.*{key}"):
        check_settings(bad)


def test_refuses_non_finite_scores_and_a_grid_that_does_not_fit():
    member, non = _scores(1.0, n=50)
    with pytest.raises(ValueError, match="finite"):
        dataset_inference(np.r_[member, np.nan], non)
    with pytest.raises(ValueError, match="no m fits"):
        dataset_inference(member, non, {"m": [40]})


def test_defaults_match_the_config():
    from tests.helpers.config import compose_config

    cfg = compose_config("logger=none").analysis.dataset_inference
    assert cfg.enabled is True and check_settings(dict(cfg)) == check_settings(DEFAULTS)


@pytest.mark.slow
def test_job_records_it_and_report_recomputes_it(default_job, tmp_path):
    cfg, path = default_job
    res = json.loads(path.read_text())
    di = res["analysis"]["dataset_inference"]["csa"]
    assert di["n_members"] == di["n_nonmembers"] == 100 and di["max_m"] == 50
    assert di["auc"] == pytest.approx(res["attacks"]["csa"]["auc"])
    # The report redoes it from scores.parquet with the job's own settings: the same numbers.
    job = tmp_path / "sweep" / "0"
    job.mkdir(parents=True)
    for name in ("results.json", FILENAME):
        (job / name).write_bytes((path.parent / name).read_bytes())
    build_report(tmp_path / "sweep", wandb_log=False)
    row = pd.read_csv(tmp_path / "sweep" / "dataset_inference.csv").iloc[0]
    assert row["attack"] == "csa" and row["fpr"] == pytest.approx(di["fpr"])
    assert row["power@m=20"] == pytest.approx(next(b["power"] for b in di["by_m"] if b["m"] == 20))
    assert "## Dataset inference" in (tmp_path / "sweep" / "report.md").read_text()


def test_an_anticonservative_test_is_caught(monkeypatch):
    # p-values halved: non-member sets are flagged about 2% of the time, and the check says so.
    from mia.evaluation import dataset_inference as di

    honest = di._p_greater
    monkeypatch.setattr(di, "_p_greater", lambda *args: honest(*args) / 2)
    member, non = _scores(0.0)
    r = di.dataset_inference(member, non, FAST)
    assert not r["calibrated"] and r["fpr"] > 0.01 and r["m_above_alpha"]


def test_the_fast_rank_sums_give_scipys_p_values_bit_for_bit():
    """The null's precomputed ranks and the members' counted wins against scipy's mannwhitneyu on
    the very candidate sets: identical p-values, with ties and without."""
    from mia.evaluation import dataset_inference as di

    rng = np.random.default_rng(5)
    non, member = np.round(rng.normal(0, 1, 300), 1), rng.normal(0.3, 1, 200)
    order = di._draw_sets(rng, non.size, 50, 20)
    assert np.array_equal(
        di._null_pvalues(non, order, 20), di.rank_test(non[order[:, :20]], non[order[:, 20:]])
    )
    non = rng.normal(0, 1, 300)
    cand, refs = (
        di._draw_sets(rng, member.size, 50, 20)[:, :20],
        di._draw_sets(rng, non.size, 50, 280),
    )
    assert np.array_equal(
        di._member_pvalues(member, non, cand, refs[:, 280:], chunk=7),
        di.rank_test(member[cand], non[refs[:, :280]]),
    )
    # ties within the members, within the non-members and across them, and a block of one value (as
    # float32 white-box scores have), so the tie term differs from row to row
    member, non = np.round(rng.normal(0.3, 1, 200), 1), np.round(rng.normal(0, 1, 300), 1)
    member[:50], non[:80] = 0.0, 0.0
    assert np.unique(np.r_[member, non]).size < member.size + non.size
    cand, refs = (
        di._draw_sets(rng, member.size, 50, 20)[:, :20],
        di._draw_sets(rng, non.size, 50, 280),
    )
    assert np.array_equal(
        di._member_pvalues(member, non, cand, refs[:, 280:], chunk=7),
        di.rank_test(member[cand], non[refs[:, :280]]),
    )
