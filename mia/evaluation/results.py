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

SCHEMA_VERSION = 2
METRIC_KEYS = ("auc", "auc_std", "auc_ci95", "tpr_at_fpr_1e-2", "tpr_at_fpr_1e-3", "balanced_accuracy",
               "n_members", "n_nonmembers", "seconds")


def new(config: dict, git: str, seed: int, target: dict, data: dict, gap: dict) -> dict:
    """A job's record before any attack ran."""
    return {"schema_version": SCHEMA_VERSION, "config": config, "git": git, "seed": seed, "target": target,
            "data": data, "gap": gap, "attacks": {}, "roc": {}, "timing": {}}


def add_attack(results: dict, name: str, metrics: dict, seconds: float, diagnostics: dict, roc: dict):
    """One attack's metrics (from mia.evaluation.metrics.roc_metrics), its run time, its diagnostics, and its TPR on
    the log-spaced FPR grid ({"fpr": [...], "tpr": [...]}) for the report's ROC plots."""
    unknown = set(metrics) - set(METRIC_KEYS)
    if unknown:
        raise ValueError(f"{name}: {sorted(unknown)} are not metrics; put them in the diagnostics")
    results["attacks"][name] = {**metrics, "seconds": seconds, "diagnostics": dict(diagnostics)}
    results["roc"][name] = roc


def add_analysis(results: dict, name: str, value: dict):
    """An analysis of the attacks' scores (dataset inference, say), {attack: result}, under `analysis.<name>`."""
    results.setdefault("analysis", {})[name] = value


def add_scores(results: dict, path: str):
    """Where the job's per-pair scores lie (mia/evaluation/scores.py), relative to the job's folder, so that a
    sweep folder can be moved or copied whole."""
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
    return json.loads(Path(path).read_text())


def attack_metrics(results: dict) -> dict:
    """{attack: {metric: value}}: the shared metrics only, without each attack's diagnostics."""
    return {name: {k: v for k, v in entry.items() if k in METRIC_KEYS} for name, entry in results["attacks"].items()}


def privacy_summary(results: dict) -> dict:
    """privacy/epsilon and privacy/delta of a dp_sgd target; nothing otherwise."""
    privacy = results["defense"].get("privacy")  # dp_sgd's accounting; other defenses have none
    return {f"privacy/{k}": privacy[k] for k in ("epsilon", "delta")} if privacy else {}
