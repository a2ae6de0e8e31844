"""The check of every job's results.json against its scores.parquet: each metric recomputed from the
per-pair scores must agree (checks.json, and report.md's Checks section); a disagreement makes the
report fail once it is written."""

from __future__ import annotations

import math

from mia.data.splits import MEMBER_EVAL
from mia.evaluation import metrics, results, scores
from mia.report.rows import scores_table

# Metrics recomputed from scores.parquet: equal to results.json's up to this relative tolerance
# (the same functions on the same float64 values: in practice bit for bit); counts exactly.
RECOMPUTED = ("auc", "tpr_at_fpr_1e-2", "tpr_at_fpr_1e-3", "oracle_balanced_accuracy")
RECOMPUTED_VS_CSA = (
    "delta_auc",
    "delta_tpr_at_fpr_1e-2",
    "delong_p_value",
)  # against the reference's column (rows.reference_scores)
RECOMPUTED_EXACT = ("n_members", "n_nonmembers")
RECOMPUTED_GAP = ("value", "member_mean", "nonmember_mean")
REL_TOL = 1e-9


class ScoresMismatch(ValueError):
    """results.json and scores.parquet disagree in at least one job (checks.json lists where)."""


def _recompute(job, record, df) -> tuple[list[dict], list[str]]:
    """(mismatches, problems) between one job's results.json and its scores table; both [] when they
    agree."""
    mismatches, problems = [], []

    def compare(attack, metric, reported, recomputed, exact=False):
        same = (
            reported == recomputed
            if exact or not isinstance(reported, (int, float))
            else math.isclose(reported, recomputed, rel_tol=REL_TOL, abs_tol=0.0)
        )
        if not same:
            mismatches.append(
                {
                    "job": job,
                    "attack": attack,
                    "metric": metric,
                    "results_json": reported,
                    "scores_parquet": recomputed,
                }
            )

    labels = df["label"].to_numpy()
    if not ((labels == 1) == (df["set"] == MEMBER_EVAL).to_numpy()).all():
        problems.append(f"label is not 1 exactly on the {MEMBER_EVAL} rows")
        return mismatches, problems
    cos = df["cos"].to_numpy()
    gap = metrics.gap(cos[labels == 1], cos[labels == 0], n_bootstrap=0)
    for k in RECOMPUTED_GAP:
        compare(None, f"gap.{k}", record["gap"][k], gap[k])
    reported, columns = results.attack_metrics(record), scores.attack_columns(df)
    problems += [
        f"attack {n} has metrics in results.json and no column in scores.parquet"
        for n in reported
        if n not in columns
    ]
    problems += [
        f"attack {n} has a column in scores.parquet and no metrics in results.json"
        for n in columns
        if n not in reported
    ]
    for name in (n for n in reported if n in columns):
        m = metrics.roc_metrics(df[name].to_numpy(), labels, n_bootstrap=0)
        for k in RECOMPUTED + RECOMPUTED_EXACT:
            compare(name, k, reported[name][k], m[k], exact=k in RECOMPUTED_EXACT)
        vs = record["attacks"][name].get("vs_csa")
        ref = results.reference(record)
        if ref in df.columns:
            ref_scores = df[ref].to_numpy()
        elif "comparison" not in record["config"].get("analysis", {}):
            ref_scores = (
                cos  # recorded before analysis.comparison: the reference scored the cosines
            )
        else:
            ref_scores = None  # the job did not run its reference: nothing to recompute against
        if vs is not None and ref_scores is not None:
            member = labels == 1
            d = metrics.paired_comparison(
                (df[name].to_numpy()[member], df[name].to_numpy()[~member]),
                (ref_scores[member], ref_scores[~member]),
                n_bootstrap=0,
            )
            for k in RECOMPUTED_VS_CSA:
                compare(name, f"vs_csa.{k}", vs[k], d[k])
    return mismatches, problems


def check_scores(rows) -> dict:
    """Recompute every job's metrics from its scores.parquet and compare them with its results.json.
    A scores file that is missing, unreadable or inconsistent is an error, and the seed bootstrap
    (points, fits) then leaves that job's pairs out."""
    checked, mismatches, errors = [], [], []
    for row in rows:
        job, path = row["job"], row["_scores"]
        try:
            found, problems = _recompute(job, row["_results"], scores_table(row))
        except (
            Exception
        ) as err:  # a missing or broken file (NaN scores, say) fails the check, naming it
            errors.append({"job": job, "error": f"{path}: {type(err).__name__}: {err}"})
            row["_table"] = None
            continue
        if problems:
            row["_table"] = None
        checked.append(job)
        mismatches += found
        errors += [{"job": job, "error": f"{path}: {p}"} for p in problems]
    # not_checked: always empty now that every job names its scores; kept so checks.json keeps the
    # keys docs/design.md lists
    return {
        "rel_tol": REL_TOL,
        "checked": checked,
        "not_checked": [],
        "mismatches": mismatches,
        "errors": errors,
        "agree": not mismatches and not errors,
    }


def mismatch_lines(checks) -> list[str]:
    lines = [f"{e['job']}: {e['error']}" for e in checks["errors"]]
    lines += [
        f"{m['job']}: {m['attack'] + ' ' if m['attack'] else ''}{m['metric']}: results.json "
        f"{m['results_json']!r}, scores.parquet {m['scores_parquet']!r}"
        for m in checks["mismatches"]
    ]
    return lines


def markdown(checks) -> list[str]:
    n = len(checks["checked"])
    md = ["", "## Checks", ""]
    if checks["agree"]:
        md.append(
            f"metrics recomputed from scores.parquet: {n} jobs, all agree (relative tolerance "
            f"{REL_TOL:g})"
        )
    else:
        md.append(
            f"metrics recomputed from scores.parquet: {n} jobs read, "
            f"{len(checks['mismatches'])} mismatches, {len(checks['errors'])} errors:"
        )
        md += [f"- {line}" for line in mismatch_lines(checks)]
    return md
