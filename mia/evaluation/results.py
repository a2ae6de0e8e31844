"""results.json: the one record of a job (docs/design.md §10). Written here, read here: the sweep
report and W&B take what they need through the readers below, never by poking at keys themselves.

Schema 2: each attack's entry holds the shared metrics (METRIC_KEYS) and its own diagnostics under
`diagnostics`, so an attack can never overwrite a metric. Files without `schema_version` (schema 1)
had the diagnostics beside the metrics; the readers take the metrics of both. `scores`, the path of
the job's per-pair scores (mia/evaluation/scores.py) relative to its folder, is absent from files written before
jobs kept them, as `analysis` (dataset inference, mia/analysis/) is from files written before it existed.
"""
from __future__ import annotations

import json
from pathlib import Path

from mia.evaluation import utility
from mia.cache import atomic_write_text

SCHEMA_VERSION = 2
METRIC_KEYS = ("auc", "auc_std", "auc_ci95", "tpr_at_fpr_1e-2", "tpr_at_fpr_1e-3", "balanced_accuracy",
               "n_members", "n_nonmembers", "seconds")
# The per-attack columns of the sweep report and W&B summary.
REPORTED = ("auc", "auc_std", "tpr_at_fpr_1e-2", "tpr_at_fpr_1e-3", "balanced_accuracy")
BLIND = "blind"  # the caption-only baseline's attack key (conf/attack/blind.yaml): what shift alone scores


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
    """An analysis of the attacks' scores (mia/analysis/), {attack: result}, under `analysis.<name>`."""
    results.setdefault("analysis", {})[name] = value


def add_scores(results: dict, path: str):
    """Where the job's per-pair scores lie (mia/evaluation/scores.py), relative to the job's folder, so that a
    sweep folder can be moved or copied whole."""
    if Path(path).is_absolute():
        raise ValueError(f"scores path {path!r}: must be relative to the job's folder")
    results["scores"] = str(path)


def scores_path(results: dict, job_dir: Path) -> Path | None:
    """The job's scores.parquet, or None for a job that kept none (written before scores were kept)."""
    return Path(job_dir) / results["scores"] if results.get("scores") else None


def write(path: Path, results: dict) -> Path:
    atomic_write_text(path, json.dumps(results, indent=1))
    return path


def load(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def attack_metrics(results: dict) -> dict:
    """{attack: {metric: value}}: the shared metrics only, whatever the schema version."""
    return {name: {k: v for k, v in entry.items() if k in METRIC_KEYS} for name, entry in results["attacks"].items()}


def defense_label(results: dict) -> str:
    """The job's defense and its strength (`none` for files written before defenses existed)."""
    return (results.get("defense") or {}).get("label", "none")


def privacy_summary(results: dict) -> dict:
    """privacy/epsilon and privacy/delta of a dp_sgd target; nothing otherwise."""
    privacy = (results.get("defense") or {}).get("privacy")
    return {f"privacy/{k}": privacy[k] for k in ("epsilon", "delta")} if privacy else {}


def report_row(results: dict, job: str) -> dict:
    """One flat row of the sweep report; `_`-keys carry what only the plots need."""
    gap, data = results["gap"], results["data"]
    parts = data.get("shift_parts")
    row = {"job": job, "size": results["target"]["size"], "epochs": results["target"]["epochs"],
           "model": results["target"]["model"], "params": results["target"].get("params"),
           "seed": results.get("seed", 0), "nonmembers": data["nonmembers"], "shift": _shift(data),
           "shift_parts": "+".join(parts) if parts else None, "cache_key": results["target"]["cache_key"],
           "defense": defense_label(results),
           "weight_decay": results["config"].get("train", {}).get("weight_decay"),
           **utility.summary(results.get("utility")), **privacy_summary(results),
           **{f"gap_{k}": v for k, v in gap.items() if k != "ci95"},
           "gap_ci_lo": gap["ci95"][0], "gap_ci_hi": gap["ci95"][1]}
    by_attack = attack_metrics(results)
    for name, m in by_attack.items():
        row.update({f"{name}/{k}": m.get(k) for k in REPORTED})
    blind = by_attack.get(BLIND, {}).get("auc")
    if blind is not None:  # the part of each AUC that the member / non-member shift alone does not explain
        row.update({f"{name}/auc_minus_blind": m["auc"] - blind for name, m in by_attack.items()
                    if name != BLIND and m.get("auc") is not None})
    row["_roc"] = results.get("roc", {})
    row["_config"] = results["config"]
    return row


def _shift(data: dict) -> float | None:
    """data.shift of an i.i.d. job; files written before data.shift existed had none (shift 0). None
    where non-members come from a corpus of their own (ood, audit)."""
    if "shift" in data:
        return data["shift"]
    return 0.0 if data["nonmembers"] == "iid" else None
