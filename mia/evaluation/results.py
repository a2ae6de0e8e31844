"""results.json: the one record of a job (docs/design.md §10), written here. Its readers, the sweep
report's rows (mia/report/rows.py) and the W&B summary (mia/tracking.py), go through the readers
below wherever a key needs a rule to read (an attack's metrics without its diagnostics, say).

Each attack's entry holds the shared metrics (METRIC_KEYS) and its own diagnostics under
`diagnostics`, so an attack can never overwrite a metric. `scores` is the path of the job's per-pair
scores (mia/evaluation/scores.py) relative to its folder.
"""

from __future__ import annotations

import json
from pathlib import Path

from mia.cache import atomic_write_text

# 3: oracle_balanced_accuracy (was balanced_accuracy), TPR intervals, vs_csa, calibrated
SCHEMA_VERSION = 3
METRIC_KEYS = (
    "auc",
    "auc_std",
    "auc_ci95",
    "tpr_at_fpr_1e-2",
    "tpr_at_fpr_1e-2_ci95",
    "tpr_at_fpr_1e-3",
    "tpr_at_fpr_1e-3_ci95",
    "low_fpr_resolved",
    "tpr_tied",
    "top_tie_share",
    "oracle_balanced_accuracy",
    "n_members",
    "n_nonmembers",
    "seconds",
)
# Under data.shift > 0, each attack's AUC on the non-members the shift left unswapped
# (mia.evaluation.scoring.unshifted)
UNSHIFTED_KEYS = ("auc_unshifted", "auc_unshifted_ci95", "n_unshifted", "vs_csa_unshifted")


class SchemaError(ValueError):
    """A results.json of a schema version this code does not read."""


def new(
    config: dict,
    git: str,
    seed: int,
    target: dict,
    data: dict,
    gap: dict,
    loss_gap: dict | None = None,
    d_prime: dict | None = None,
) -> dict:
    """A job's record before any attack ran: `gap` in cosine (mia.evaluation.metrics.gap), and the
    same members and non-members' `loss_gap` (metrics.loss_gap) and `d_prime` (metrics.d_prime)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "config": config,
        "git": git,
        "seed": seed,
        "target": target,
        "data": data,
        "gap": gap,
        "loss_gap": loss_gap,
        "d_prime": d_prime,
        "attacks": {},
        "roc": {},
        "timing": {},
    }


def add_attack(
    results: dict,
    name: str,
    metrics: dict,
    seconds: float,
    diagnostics: dict,
    roc: dict,
    *,
    reference: str,
    vs_csa: dict | None = None,
    calibrated: list | None = None,
    calibrated_skipped: str | None = None,
    unshifted: dict | None = None,
):
    """One attack's metrics (from mia.evaluation.metrics.roc_metrics), its run time, its
    diagnostics, and its TPR on the log-spaced FPR grid ({"fpr": [...], "tpr": [...]}) for the
    report's ROC plots. `vs_csa` is its paired comparison with the job's reference attack
    (analysis.comparison.reference, CSA by default; metrics.paired_comparison; every attack but the
    `reference` itself), `calibrated` its thresholds set on the known non-members
    (metrics.calibrated_thresholds), or None with the reason in `calibrated_skipped`. `unshifted`
    (only where data.shift swapped non-members) is its AUC on the unswapped ones
    (mia.evaluation.scoring.unshifted: UNSHIFTED_KEYS, vs_csa_unshifted for every attack but the
    reference)."""
    unknown = set(metrics) - set(METRIC_KEYS)
    if unknown:
        raise ValueError(f"{name}: {sorted(unknown)} are not metrics; put them in the diagnostics")
    if (name == reference) != (vs_csa is None):
        raise ValueError(
            f"{name}: every attack but {reference} has vs_csa, and {reference} has none"
        )
    if (calibrated is None) == (calibrated_skipped is None):
        raise ValueError(f"{name}: either calibrated thresholds or the reason there are none")
    if unshifted is not None:
        want = {k for k in UNSHIFTED_KEYS if k != "vs_csa_unshifted" or name != reference}
        if set(unshifted) != want:
            raise ValueError(
                f"{name}: the unshifted metrics are {sorted(want)}, got {sorted(unshifted)}"
            )
    entry = {**metrics, "seconds": seconds}
    if vs_csa is not None:
        entry["vs_csa"] = vs_csa
    entry["calibrated"] = calibrated
    if calibrated_skipped is not None:
        entry["calibrated_skipped"] = calibrated_skipped
    entry.update(unshifted or {})
    results["attacks"][name] = {**entry, "diagnostics": dict(diagnostics)}
    results["roc"][name] = roc


def add_skipped(results: dict, name: str, why: str):
    """An attack the data gave nothing to score with (mia.attacks.base.NotApplicable), and why; it
    has no entry under `attacks` and no column in scores.parquet."""
    results.setdefault("skipped", {})[name] = why


def skipped(results: dict) -> dict:
    """{attack: why} of the attacks a job could not score; {} where every attack was scored."""
    return dict(results.get("skipped", {}))


def add_analysis(results: dict, name: str, value: dict):
    """An analysis of the attacks' scores (dataset inference, say), {attack: result}, under
    `analysis.<name>`."""
    results.setdefault("analysis", {})[name] = value


def add_scores(results: dict, path: str):
    """Where the job's per-pair scores lie (mia/evaluation/scores.py), relative to the job's folder,
    so that a sweep folder can be moved or copied whole."""
    if Path(path).is_absolute():
        raise ValueError(f"scores path {path!r}: must be relative to the job's folder")
    results["scores"] = str(path)


def scores_path(results: dict, job_dir: Path) -> Path:
    """The job's scores.parquet."""
    return Path(job_dir) / results["scores"]


def write(path: Path, results: dict) -> Path:
    atomic_write_text(path, json.dumps(results, indent=1))
    return path


def load(path: Path) -> dict:
    """A results.json of this schema version; SchemaError for any other. Version 2 files
    (balanced_accuracy, no TPR intervals, no vs_csa) are refused too: the report reads the keys
    version 3 added, and no version 2 file is kept (docs/outputs.md)."""
    record = json.loads(Path(path).read_text())
    version = record.get("schema_version", 1)
    if version != SCHEMA_VERSION:
        raise SchemaError(
            f"{path}: results.json schema {version}; this code reads schema {SCHEMA_VERSION} "
            f"only ({'a newer mia wrote it' if version > SCHEMA_VERSION else 'run the job again'})"
        )
    return record


def reference(results: dict) -> str | None:
    """The attack the job compared every other attack with (vs_csa): the key of its config's
    analysis.comparison.reference; for a job recorded before that setting, the one attack it scored
    without vs_csa; None where neither tells."""
    comparison = results["config"].get("analysis", {}).get("comparison")
    if comparison:
        (name,) = comparison["reference"]
        return name
    alone = [name for name, entry in results["attacks"].items() if "vs_csa" not in entry]
    return alone[0] if len(alone) == 1 else None


def attack_metrics(results: dict) -> dict:
    """{attack: {metric: value}}: the shared metrics only, without each attack's diagnostics, its
    comparison with the reference or its calibrated thresholds."""
    return {
        name: {k: v for k, v in entry.items() if k in METRIC_KEYS}
        for name, entry in results["attacks"].items()
    }


def privacy_summary(results: dict) -> dict:
    """privacy/epsilon and privacy/delta of a dp_sgd target; nothing otherwise."""
    privacy = results["defense"].get("privacy")  # dp_sgd's accounting; other defenses have none
    return {f"privacy/{k}": privacy[k] for k in ("epsilon", "delta")} if privacy else {}
