"""The sweep report on a fake sweep dir whose numbers are known, and its Hydra callback."""

import json

import numpy as np
import pytest

from mia.report import ReportCallback, build_report
from mia.report.checks import ScoresMismatch, check_scores
from mia.report.fits import fits
from mia.report.markdown import interval_verdict, verdict
from mia.report.rows import load_rows
from mia.report.stats import points
from tests.helpers.sweeps import fake_job, scores_with_auc, write_job, write_sweep


def test_report_recovers_known_slopes_and_lists_exclusions(tmp_path):
    # gap = 50 T / N exactly: slope -1 in N at fixed T, +1 in T at fixed N; one flipped gap.
    runs = [fake_job(n, 40, 50 * 40 / n) for n in (1000, 4000, 16000, 64000)]
    runs += [fake_job(4000, t, 50 * t / 4000) for t in (10, 20)]
    runs.append(fake_job(256000, 40, -0.001))
    runs += [
        fake_job(
            4000, 40, 50 * 40 / 4000, nonmembers="ood", shift=None, aucs={"csa": 0.99, "blind": 0.9}
        )
    ]
    sweep = write_sweep(tmp_path, runs)
    build_report(sweep, wandb_log=False)
    fit = json.loads((sweep / "fits.json").read_text())
    n_fit, t_fit = fit["gap_vs_N@T=40"], fit["gap_vs_T@N=4000"]
    assert n_fit["slope"] == pytest.approx(-1.0) and n_fit["intercept"] == pytest.approx(
        np.log10(2000)
    )
    assert t_fit["slope"] == pytest.approx(1.0)
    assert n_fit["n_points"] == 4
    assert n_fit["excluded"] == [
        {"x": 256000.0, "y": pytest.approx(-0.001), "reason": "non-positive gap"}
    ]
    report = (sweep / "report.md").read_text()
    assert "left out x=256000" in report and "non-positive gap" in report
    for png in (
        "gap_vs_N.png",
        "gap_vs_T.png",
        "auc_vs_N.png",
        "tpr_vs_N.png",
        "ood_vs_iid.png",
        "roc_N1000_T40_iid.png",
    ):
        assert (sweep / png).stat().st_size > 1000, png
    lines = (sweep / "results.csv").read_text().splitlines()
    assert len(lines) == 1 + len(runs) and "csa/auc" in lines[0]


def test_rows_are_sorted_and_fit_skips_single_points(tmp_path):
    sweep = write_sweep(tmp_path, [fake_job(4000, 40, 0.1), fake_job(1000, 40, 0.2)])
    rows = load_rows(sweep)
    assert [r["size"] for r in rows] == [1000, 4000]
    assert set(fits(points(rows, 0))) == {"gap_vs_N@T=40"}  # one T value: no gap-vs-T series


def test_points_keep_the_gaps_two_sides_and_plot_them(tmp_path):
    # members fixed at 0.5 + gap, non-members at 0.5: the seed mean and sd of each side per N
    runs = [
        fake_job(n, 40, g, seed=s)
        for n, gaps in ((1000, (0.2, 0.3)), (4000, (0.05, 0.07)))
        for s, g in enumerate(gaps)
    ]
    sweep = write_sweep(tmp_path, runs)
    pts = {p["size"]: p for p in points(load_rows(sweep), 0)}
    assert pts[1000]["member_cos_mean"] == pytest.approx(0.75)
    assert pts[1000]["member_cos_seed_std"] == pytest.approx(np.std([0.7, 0.8], ddof=1))
    assert (
        pts[4000]["nonmember_cos_mean"] == pytest.approx(0.5)
        and pts[4000]["nonmember_cos_seed_std"] == 0
    )
    build_report(sweep, wandb_log=False)
    assert (sweep / "cos_vs_N.png").stat().st_size > 1000
    assert "| 0.750 / 0.500 |" in (sweep / "report.md").read_text()


def test_points_carry_each_measure_with_its_seed_interval_where_the_jobs_have_it(tmp_path):
    runs = []
    for s, (loss, dprime) in enumerate(((-0.3, 1.0), (-0.5, 1.4))):
        job = fake_job(1000, 40, 0.1 + 0.02 * s, seed=s)
        job.record["loss_gap"], job.record["d_prime"] = {"value": loss}, {"value": dprime}
        job.record["config"]["train"]["batch_size"] = 128
        runs.append(job)
    runs.append(fake_job(4000, 40, 0.05))  # a job recorded before the loss gap and d'
    outside = fake_job(16000, 40, 0.01)  # a target trained elsewhere, on a recipe of its own
    outside.record["target"]["source"] = "checkpoint"
    outside.record["config"]["train"]["batch_size"] = 128
    runs.append(outside)
    pts = {p["size"]: p for p in points(load_rows(write_sweep(tmp_path, runs)), 0)}
    one = pts[1000]
    half = 12.706204736174698 * np.std([-0.3, -0.5], ddof=1) / np.sqrt(2)  # t(0.975, 1)
    assert one["loss_gap_mean"] == pytest.approx(-0.4)
    assert one["loss_gap_seed_ci"] == pytest.approx([-0.4 - half, -0.4 + half])
    assert one["d_prime_mean"] == pytest.approx(1.2) and one["d_prime_seed_ci"][0] < 1.0
    assert one["gap_seed_ci"][0] < 0.1 < 0.12 < one["gap_seed_ci"][1]
    assert one["steps"] == 40 * 8  # T x ceil(1000 / 128)
    old = pts[4000]
    assert old["loss_gap_mean"] is None and old["d_prime_seed_ci"] == [None, None]
    assert old["steps"] is None and old["gap_seed_ci"] == [None, None]  # one seed, no batch size
    assert pts[16000]["steps"] is None


def test_empty_sweep_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="no results.json"):
        build_report(tmp_path, wandb_log=False)


def test_callback_writes_report_and_survives_empty_sweep(tmp_path):
    from omegaconf import OmegaConf

    sweep = write_sweep(tmp_path / "s", []) if (tmp_path / "s").mkdir() is None else None
    cfg = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}})
    ReportCallback().on_multirun_end(cfg)  # nothing to report: warns, does not raise
    assert not (sweep / "report.md").exists()
    write_sweep(sweep, [fake_job(1000, 40, 0.2), fake_job(4000, 40, 0.05)])
    ReportCallback().on_multirun_end(cfg)
    assert (sweep / "report.md").exists() and (sweep / "gap_vs_N.png").exists()


def test_seeds_are_pooled_with_a_bootstrap_over_seeds_and_pairs(tmp_path):
    """Two seeds per N with per-pair cosines in scores.parquet: one point per N with the seeds' mean
    and sd, a two-level bootstrap interval, and a fit over the fitted regime only."""
    rng = np.random.default_rng(0)
    sizes = (1000, 2000, 4000, 8000, 16000, 32000)
    for n in sizes:
        for seed in (0, 1):
            gap = 0.2 * (1000 / n) * (1.1 if seed else 0.9)
            noise = 0.02 if n < 32000 else 0.4  # the largest N plays noise
            member, nonmember = rng.normal(0.3, noise, 300), rng.normal(0.3, noise, 300)
            cos = member - member.mean() + 0.3 + gap, nonmember - nonmember.mean() + 0.3
            write_job(
                tmp_path / f"{n}_{seed}",
                fake_job(
                    n,
                    40,
                    cos=cos,
                    attacks={"csa": cos},
                    seed=seed,
                    gaussian_auc=0.99 if n == 1000 else 0.7,
                ),
            )  # memorised at 1k
    sweep = tmp_path
    build_report(sweep, wandb_log=False)
    pts = {p["size"]: p for p in points(load_rows(sweep), 200)}
    assert pts[4000]["n_seeds"] == 2 and pts[4000]["gap_mean"] == pytest.approx(0.05)
    assert pts[4000]["gap_seed_std"] == pytest.approx(np.std([0.045, 0.055], ddof=1))
    lo, hi = pts[4000]["gap_ci"]
    assert lo < 0.05 < hi and hi - lo < 0.05  # seeds 0.045 and 0.055, plus pair noise
    fit = json.loads((sweep / "fits.json").read_text())["gap_vs_N@T=40"]
    assert fit["fitted_x"] == [2000, 4000, 8000, 16000]
    reasons = {e["x"]: e["reason"] for e in fit["excluded"]}
    assert reasons[1000].startswith("saturated") and reasons[32000].startswith("noisy")
    assert fit["slope"] == pytest.approx(-1.0) and fit["slope_ci95"][0] < -1 < fit["slope_ci95"][1]
    assert fit["method"].startswith("bootstrap") and fit["contains_expected"] is True
    assert len(fit["local_slopes"]) == 5
    report = (sweep / "report.md").read_text()
    row = next(line for line in report.splitlines() if line.startswith("| 4000 | 40 | iid | 2 |"))
    assert "| 0.0500 ± 0.0071 |" in row and "no: saturated" in report
    assert "12 jobs, all agree" in report
    assert len((sweep / "points.csv").read_text().splitlines()) == 1 + len(sizes)


def test_a_job_whose_scores_fail_the_check_falls_back_to_its_own_interval(tmp_path):
    """A scores.parquet that is missing fails the check (the report is written, then refused), and
    the job's point and the fit fall back to what results.json holds: the job's own interval, a
    t-interval."""
    sweep = write_sweep(tmp_path, [fake_job(1000, 40, 0.2), fake_job(4000, 40, 0.05)])
    (sweep / "1" / "scores.parquet").unlink()
    with pytest.raises(ScoresMismatch, match="1: .*scores.parquet: FileNotFoundError"):
        build_report(sweep, wandb_log=False)
    checks = json.loads((sweep / "checks.json").read_text())["scores"]
    assert (
        checks["checked"] == ["0"]
        and [e["job"] for e in checks["errors"]] == ["1"]
        and not checks["agree"]
    )
    fit = json.loads((sweep / "fits.json").read_text())["gap_vs_N@T=40"]
    assert fit["method"] == "OLS t-interval through the seed means" and fit["fitted_x"] == [
        1000,
        4000,
    ]
    rows = load_rows(sweep)
    check_scores(rows)  # refuses job 1's scores: the seed bootstrap leaves its pairs out
    pts = {p["size"]: p for p in points(rows, 200)}
    assert pts[4000]["gap_ci"] == [rows[1]["gap_ci_lo"], rows[1]["gap_ci_hi"]]
    assert pts[1000]["gap_ci"] != [
        rows[0]["gap_ci_lo"],
        rows[0]["gap_ci_hi"],
    ]  # the bootstrap of its pairs


def test_report_says_beats_below_or_no_difference_only_where_the_adjusted_test_says_so(tmp_path):
    """Three seeds of one condition, CSA (the cosines) at AUC 0.75 on 100 pairs a side: an attack at
    0.95 beats it, one at 0.5 is below it, and the cosines under another name are no different
    (Delta 0 in every seed, p 1). TPR@1%FPR rests on one false positive at 100 non-members: marked
    unresolved."""
    cos = scores_with_auc(0.75, 100)
    attacks = {
        "csa": cos,
        "better": scores_with_auc(0.95, 100),
        "worse": scores_with_auc(0.5, 100),
        "same": cos,
    }
    sweep = write_sweep(
        tmp_path, [fake_job(1000, 40, cos=cos, attacks=attacks, seed=s) for s in range(3)]
    )
    build_report(sweep, wandb_log=False)
    (p,) = points(load_rows(sweep), 200)
    assert (
        p["better/delta_auc_vs_csa_mean"] == pytest.approx(0.2)
        and p["better/delta_auc_vs_csa_ci"][0] > 0
    )
    assert p["worse/delta_auc_vs_csa_ci"][1] < 0 and p["same/delta_auc_vs_csa_ci"] == [0.0, 0.0]
    report = (sweep / "report.md").read_text()
    head = next(line for line in report.splitlines() if line.startswith("| N |"))
    assert "better vs CSA" in head and "csa vs CSA" not in head
    row = next(line for line in report.splitlines() if line.startswith("| 1000 | 40 | iid | 3 |"))
    cells = dict(
        zip([c.strip() for c in head.split("|")], [c.strip() for c in row.split("|")], strict=True)
    )
    assert cells["better vs CSA: ΔAUC [95% t CI over seeds]"].startswith("beats CSA: +0.200 [")
    assert cells["worse vs CSA: ΔAUC [95% t CI over seeds]"].startswith("below CSA: -0.250 [")
    assert cells["same vs CSA: ΔAUC [95% t CI over seeds]"] == (
        "no verdict: +0.000 [+0.000, +0.000] (p 1, Holm 1)"
    )
    assert cells["csa TPR@1%"].endswith("(unresolved)")
    assert "3 jobs, all agree" in report  # vs_csa recomputed from scores.parquet too


def test_a_tampered_comparison_fails_the_check(tmp_path):
    cos = scores_with_auc(0.75, 40)
    job = fake_job(1000, 40, cos=cos, attacks={"csa": cos, "other": scores_with_auc(0.9, 40)})
    job.record["attacks"]["other"]["vs_csa"]["delta_auc"] += 0.01
    sweep = write_sweep(tmp_path, [job])
    with pytest.raises(ScoresMismatch, match="other vs_csa.delta_auc"):
        build_report(sweep, wandb_log=False)


def test_verdict_reads_the_adjusted_p():
    assert verdict(0.01, 0.1, "CSA") == "beats CSA" and verdict(0.049, -0.1, "CSA") == "below CSA"
    assert verdict(0.05, 0.1, "CSA") == verdict(0.0, 0.0, "CSA") == "no verdict"
    assert verdict(None, 0.1, "CSA") is None


def test_a_single_jobs_verdict_reads_its_interval():
    assert interval_verdict([0.01, 0.2], "CSA") == "beats CSA"
    assert interval_verdict([-0.2, -0.01], "CSA") == "below CSA"
    assert interval_verdict([-0.01, 0.2], "CSA") == interval_verdict([0.0, 0.0], "CSA")
    assert interval_verdict([-0.01, 0.2], "CSA") == "no difference"
    assert interval_verdict([None, None], "CSA") is None


def test_a_t_by_n_grid_gets_the_two_factor_fit_its_figures_and_the_exposure_analysis(tmp_path):
    """2 T x 2 N x 2 seeds with gap = 5 T / N and the same per-pair ranking in every job: the plane
    is T/N's, cells of equal T*N differ by T/N's ratio, and the same members are the most
    exposed."""
    rng = np.random.default_rng(0)
    base, nonmember = rng.normal(0.3, 0.002, 200), rng.normal(0.3, 0.002, 200)
    base += nonmember.mean() - base.mean()  # the gap is exactly the shift added below
    for t in (10, 40):
        for n in (1000, 4000):
            for seed in (0, 1):
                cos = base + 5 * t / n * (1.02 if seed else 0.98), nonmember
                write_job(
                    tmp_path / f"{t}_{n}_{seed}",
                    fake_job(n, t, cos=cos, attacks={"csa": cos}, seed=seed),
                )
    build_report(tmp_path, wandb_log=False)
    law = json.loads((tmp_path / "fits.json").read_text())["tn_law"]
    assert law["alpha"] == pytest.approx(1.0, abs=0.01) and law["beta"] == pytest.approx(
        1.0, abs=0.01
    )
    assert law["verdict"] == "T/N holds" and law["n_points"] == 4 and law["enough_cells"] is False
    (steps,) = law["equal_steps"]  # 40 x 1000 = 10 x 4000
    assert (
        steps["ratio"] == pytest.approx(16, rel=0.01)
        and steps["contains_t_over_n"]
        and not steps["contains_1"]
    )
    for png in ("gap_vs_T_by_N.png", "gap_vs_N_by_T.png"):
        assert (tmp_path / png).stat().st_size > 1000, png
    exposed = json.loads((tmp_path / "exposure.json").read_text())
    assert len(exposed["across_seeds"]) == 4 and all(
        o["overlap"] == 50 for o in exposed["across_seeds"]
    )
    assert len(exposed["across_sizes"]) == 4 and exposed["persistent"][0]["n"] == 50
    assert {r["size"] for r in exposed["tpr_at_fpr_1e-3_at_largest_n"]} == {4000}
    report = (tmp_path / "report.md").read_text()
    assert "**T/N holds**" in report and "## Exposure" in report and "gap_vs_T_by_N.png" in report


def test_an_attack_a_job_could_not_score_is_listed_and_the_rest_of_the_report_holds(tmp_path):
    """One size's WSA found no pseudo-members: the report names the job, the attack and the reason,
    and reports WSA at the other size only."""
    scored = fake_job(1000, 40, 0.2, aucs={"csa": 0.7, "blind": 0.5, "wsa": 0.6})
    skipped = fake_job(4000, 40, 0.1, aucs={"csa": 0.6, "blind": 0.5})
    skipped.record["skipped"] = {
        "wsa": "lam=1.5: no aux_pool pair reaches cos >= mu + lam * sigma = 1.2"
    }
    sweep = write_sweep(tmp_path, [scored, skipped])
    build_report(sweep, wandb_log=False)
    report = (sweep / "report.md").read_text()
    assert "## Not scored" in report
    assert [
        line
        for line in report.splitlines()
        if line.startswith("- job 1 (N=4000, T=40, iid, seed 0): wsa: lam=1.5: no aux_pool pair")
    ]
    assert {r["size"]: r.get("wsa/auc") for r in load_rows(sweep)} == {
        1000: pytest.approx(0.6),
        4000: None,
    }
