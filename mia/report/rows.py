"""The sweep report's rows: one flat row per job, from its results.json, with its scores.parquet
read on demand; and the attacks' order in every table and plot."""

from __future__ import annotations

import csv
from pathlib import Path

from hydra.utils import get_class

from mia.evaluation import results, scores, utility

# Each attack's columns in the report's rows.
REPORTED = ("auc", "auc_std", "tpr_at_fpr_1e-2", "tpr_at_fpr_1e-3", "oracle_balanced_accuracy")
# Each attack's comparison with the job's reference attack in the rows: vs_csa's keys, and the row's
# column names for them.
VS_CSA = {
    "delta_auc": "delta_auc_vs_csa",
    "delta_tpr_at_fpr_1e-2": "delta_tpr_at_fpr_1e-2_vs_csa",
    "p_value": "p_value_vs_csa",
    "delong_p_value": "delong_p_value_vs_csa",
}


def load_rows(sweep_dir) -> list[dict]:
    """One flat row per job, sorted by shift, condition, epochs, model, size and seed."""
    rows = []
    for path in sorted(Path(sweep_dir).rglob("results.json")):
        record = results.load(path)
        row = report_row(record, str(path.parent.relative_to(sweep_dir)))
        row["_results"], row["_scores"] = record, results.scores_path(record, path.parent)
        rows.append(row)
    if not rows:
        raise FileNotFoundError(f"no results.json under {sweep_dir}")
    # i.i.d. first by shift, ood / audit last; then condition, epochs, model, size and seed
    return sorted(
        rows,
        key=lambda r: (
            r["shift"] is None,
            r["shift"] or 0.0,
            r["nonmembers"],
            r["epochs"],
            str(r["model"]),
            r["params"],
            r["size"],
            r["seed"],
        ),
    )


def report_row(record: dict, job: str) -> dict:
    """One flat row of the sweep report; `_`-keys carry what only the plots need."""
    gap, data = record["gap"], record["data"]
    parts = data["shift_parts"]  # null where nothing is shifted
    row = {
        "job": job,
        "size": record["target"]["size"],
        "epochs": record["target"]["epochs"],
        "model": record["target"]["model"],
        "params": record["target"]["params"],
        "seed": record["seed"],
        "nonmembers": data["nonmembers"],
        "shift": data["shift"],
        "shift_parts": "+".join(parts) if parts else None,
        "cache_key": record["target"]["cache_key"],
        "defense": record["defense"]["label"],
        "weight_decay": record["config"]["train"]["weight_decay"],
        "init": init_label(record),
        **utility.summary(record["utility"]),
        **results.privacy_summary(record),
        **{f"gap_{k}": v for k, v in gap.items() if k != "ci95"},
        "gap_ci_lo": gap["ci95"][0],
        "gap_ci_hi": gap["ci95"][1],
        # the same pairs' loss gap and d' (docs/design.md §6.7); null in a job recorded before them
        "loss_gap_value": (record.get("loss_gap") or {}).get("value"),
        "d_prime_value": (record.get("d_prime") or {}).get("value"),
    }
    by_attack = results.attack_metrics(record)
    for name, m in by_attack.items():
        row.update({f"{name}/{k}": m[k] for k in REPORTED})
        row.update(
            {
                f"{name}/{k}_resolved": m["low_fpr_resolved"][k.rsplit("_", 1)[1]]
                for k in ("tpr_at_fpr_1e-2", "tpr_at_fpr_1e-3")
            }
        )
        # the threshold set on D_no, as an auditor would
        for c in record["attacks"][name].get("calibrated") or []:
            tag = f"{c['fpr_target']:.0e}".replace("e-0", "e-")
            row[f"{name}/calibrated_tpr_{tag}"], row[f"{name}/calibrated_fpr_{tag}"] = (
                c["tpr"],
                c["realised_fpr"],
            )
        vs = record["attacks"][name].get("vs_csa")  # every attack but the reference
        if vs is not None:
            row.update({f"{name}/{col}": vs[k] for k, col in VS_CSA.items()})
            lo, hi = vs["delta_auc_ci95"] or (None, None)
            row[f"{name}/delta_auc_vs_csa_ci_lo"], row[f"{name}/delta_auc_vs_csa_ci_hi"] = lo, hi
        row.update(_unshifted(name, record["attacks"][name]))
    base = baseline(record)
    # the part of each AUC that the member / non-member shift alone does not explain
    if base is not None:
        row.update(
            {
                f"{name}/auc_minus_{base}": m["auc"] - by_attack[base]["auc"]
                for name, m in by_attack.items()
                if name != base
            }
        )
    row["_reference"], row["_baseline"] = results.reference(record), base
    row["_calibrated"] = calibrated(record)
    row["_compared_on_cosines"] = "comparison" not in record["config"].get("analysis", {})
    row["_skipped"] = results.skipped(record)
    row["_roc"] = record["roc"]
    row["_config"] = record["config"]
    row["_trained"] = record["target"].get("source") == "train"
    return row


def init_label(record: dict) -> str:
    """Where the target's training started: "scratch", or the folder (or file) name of the weights
    it was fine-tuned from (target.init, target=finetune's base model)."""
    init = record["target"].get("init")  # absent from results written before target.init
    if not init:
        return "scratch"
    path = Path(init)
    return path.parent.name if path.name == "open_clip" else path.name


def _unshifted(name: str, entry: dict) -> dict:
    """An attack's AUC on the non-members data.shift left unswapped, and its difference from CSA's
    on them, each with its interval; nothing where the job shifted none (docs/design.md §2.6)."""
    if "n_unshifted" not in entry:
        return {}
    lo, hi = entry["auc_unshifted_ci95"] or (None, None)
    out = {
        "n_unshifted": entry["n_unshifted"],
        f"{name}/auc_unshifted": entry["auc_unshifted"],
        f"{name}/auc_unshifted_ci_lo": lo,
        f"{name}/auc_unshifted_ci_hi": hi,
    }
    vs = entry.get("vs_csa_unshifted")  # every attack but the reference, null where none is left
    if vs is not None:
        lo, hi = vs["delta_auc_ci95"] or (None, None)
        out.update(
            {
                f"{name}/delta_auc_vs_csa_unshifted": vs["delta_auc"],
                f"{name}/delta_auc_vs_csa_unshifted_ci_lo": lo,
                f"{name}/delta_auc_vs_csa_unshifted_ci_hi": hi,
            }
        )
    return out


def baseline(record: dict) -> str | None:
    """The job's baseline attack (Attack.baseline, read from the class its config's `_target_`
    names), if it scored one."""
    for name, node in record["config"].get("attack", {}).items():
        if name in record["attacks"] and getattr(get_class(node["_target_"]), "baseline", False):
            return name
    return None


def calibrated(record: dict) -> list[str]:
    """The job's scored attacks calibrated per pair against reference models
    (Attack.calibrated_per_pair, read from the class its config's `_target_` names), by name."""
    return sorted(
        name
        for name, node in record["config"].get("attack", {}).items()
        if name in record["attacks"]
        and getattr(get_class(node["_target_"]), "calibrated_per_pair", False)
    )


def _common(rows, key: str, what: str) -> str | None:
    found = {r[key] for r in rows if r.get(key) is not None}
    if len(found) > 1:
        raise ValueError(
            f"the jobs have different {what}s ({', '.join(sorted(found))}): report them apart"
        )
    return found.pop() if found else None


def reference(rows) -> str | None:
    """The attack the sweep's jobs compared every other with (analysis.comparison.reference)."""
    return _common(rows, "_reference", "reference attack")


def baseline_of(rows) -> str | None:
    """The baseline attack of the sweep's jobs (Attack.baseline), if they scored one."""
    return _common(rows, "_baseline", "baseline attack")


def label(name: str | None) -> str:
    """How the report's prose names the reference attack."""
    return "the reference" if name is None else name.upper()


def attack_order(name: str, first: str | None = None) -> tuple[bool, str]:
    """Sort key of an attack in every table and plot of the report: `first` (the reference attack)
    first, then by name."""
    return name != first, name


def attacks_of(rows) -> list[str]:
    """The attacks the rows report, in attack_order (the sweep's reference first)."""
    names = {k.split("/")[0] for r in rows for k in r if k.endswith("/auc")}
    first = reference(rows)
    return sorted(names, key=lambda n: attack_order(n, first))


def columns(rows) -> list[str]:
    """The table's columns, in first-seen order; `_`-keys are kept for plots only."""
    return [k for k in dict.fromkeys(k for r in rows for k in r) if not k.startswith("_")]


def write_csv(rows, path):
    keys = columns(rows)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows([{k: r.get(k) for k in keys} for r in rows])


def scores_table(row):
    """The job's scores.parquet, read at most once per report (check_scores and the seed bootstrap
    both use it); None once check_scores refused it."""
    if "_table" not in row:
        row["_table"] = scores.load(row["_scores"])
    return row["_table"]


def attack_scores(row, name):
    """(member, non-member) scores of one attack of a job from its scores.parquet, or None where
    check_scores refused the file or it has no such column."""
    table = scores_table(row)
    if table is None or name not in table.columns:
        return None
    member = table["label"].to_numpy() == 1
    s = table[name].to_numpy()
    return s[member], s[~member]


def reference_scores(row):
    """(member, non-member) scores of the job's reference attack from its scores.parquet: its column
    where the job ran it; for a job recorded before analysis.comparison existed, the cosines (its
    reference, CSA, scored them); else None."""
    if row.get("_reference") is not None:
        found = attack_scores(row, row["_reference"])
        if found is not None:
            return found
    return cosines(row) if row.get("_compared_on_cosines") else None


def cosines(row):
    """(member, non-member) cosines of a job's evaluation pairs from its scores.parquet, or None
    where check_scores refused the file."""
    table = scores_table(row)
    if table is None:
        return None
    member = table["label"].to_numpy() == 1
    cos = table["cos"].to_numpy()
    return cos[member], cos[~member]
