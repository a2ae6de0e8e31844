"""A single job's report.md, in its run folder beside results.json: the headline table (each
attack's AUC and TPR@1%FPR with intervals, against the reference attack), the ROC and score plots
the job drew, the target's utility, the plan it ran and its training loss. It reads results.json's
record only, so `write` can be run again on any job folder."""

from __future__ import annotations

from pathlib import Path

from mia.cache import atomic_write_text
from mia.evaluation import results
from mia.report.markdown import verdict
from mia.report.rows import attack_order, label
from mia.report.stats import holm

FILENAME = "report.md"
ROC = "roc_loglog.png"  # drawn by the job (mia/pipeline.py), as are the histograms below
# copied from the target's cache folder (mia/training/history.py)
LOSS, HISTORY = "training_loss.png", "training_history.csv"


def histogram(name: str) -> str:
    return f"scores_{name}.png"


def write(job_dir: Path, record: dict) -> Path:
    """report.md of the job in `job_dir` whose results.json holds `record`."""
    job_dir = Path(job_dir)
    atomic_write_text(job_dir / FILENAME, markdown(record, job_dir))
    return job_dir / FILENAME


def markdown(record: dict, job_dir: Path) -> str:
    """The text of report.md; a plot is linked only where its file is in `job_dir`."""
    target, data = record["target"], record["data"]
    ref = results.reference(record)
    names = sorted(record["attacks"], key=lambda n: attack_order(n, ref))
    md = [
        f"# Job report: N={_known(target['size'])}, T={_known(target['epochs'])}, "
        f"{data['nonmembers']} non-members",
        "",
        headline(record, names, ref),
        "",
        "TPR@1%FPR marked (unresolved): the non-members allow fewer than 10 false positives at 1% "
        f"FPR. vs {label(ref)}: the AUC difference from {label(ref)} on the same pairs with its "
        'paired bootstrap 95% interval; "beats" / "below" only where the interval excludes 0.',
        "",
        _gap(record["gap"]),
        "",
    ]
    md += _skipped(record)
    md += _figures(job_dir, names)
    md += _utility(record)
    md += _plan(record, names)
    md += _training(job_dir)
    return "\n".join(md).rstrip("\n") + "\n"


def headline(record: dict, names, ref: str | None) -> str:
    """One row per scored attack."""
    head = ["attack", "AUC [95% CI]", "TPR@1%FPR [95% CI]", "TPR@0.1%FPR [95% CI]"]
    head += [f"vs {label(ref)}: ΔAUC [95% CI]", "DeLong p (Holm)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    # the job's comparisons with the reference are one family: a verdict only where Holm allows it
    compared = [record["attacks"][n].get("vs_csa") or {} for n in names]
    adjusted = dict(zip(names, holm([vs.get("delong_p_value") for vs in compared]), strict=True))
    for name in names:
        a = record["attacks"][name]
        resolved, tied = a.get("low_fpr_resolved", {}), a.get("tpr_tied", {})
        cells = [
            name + (" (reference)" if name == ref else ""),
            _interval(a["auc"], a["auc_ci95"]),
        ]
        for f in ("1e-2", "1e-3"):
            cells.append(
                _interval(a[f"tpr_at_fpr_{f}"], a.get(f"tpr_at_fpr_{f}_ci95"))
                + ("" if resolved.get(f, True) else " (unresolved)")
                + (" (tied)" if tied.get(f, False) else "")
            )
        vs = a.get("vs_csa")
        if vs is None:
            cells += ["", ""]
        else:
            ci, p_holm = vs.get("delta_auc_ci95"), adjusted[name]
            v = verdict(p_holm, vs["delta_auc"], label(ref))
            cells += [
                f"{vs['delta_auc']:+.3f}"
                + ("" if ci is None else f" [{ci[0]:+.3f}, {ci[1]:+.3f}]")
                + ("" if v is None else f" ({v})"),
                _number(vs.get("delong_p_value"), ".3g")
                + ("" if p_holm is None else f" ({p_holm:.3g})"),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _gap(gap: dict) -> str:
    lo, hi = gap["ci95"]
    return (
        f"Member / non-member image-text cosine gap: {gap['value']:.4f} (95% CI {lo:.4f} to "
        f"{hi:.4f}); the AUC a Gaussian of that gap and spread gives: {gap['gaussian_auc']:.3f}."
    )


def _skipped(record: dict) -> list[str]:
    found = results.skipped(record)
    if not found:
        return []
    return ["## Not scored", ""] + [f"- {name}: {why}" for name, why in found.items()] + [""]


def _figures(job_dir: Path, names) -> list[str]:
    md = []
    if (job_dir / ROC).exists():
        md += ["## ROC (log-log)", "", f"![ROC curves]({ROC})", ""]
    shown = [n for n in names if (job_dir / histogram(n)).exists()]
    if shown:
        md += ["## Member and non-member scores", ""]
        md += [f"![{n} scores]({histogram(n)})" for n in shown] + [""]
    return md


def _utility(record: dict) -> list[str]:
    utility = record.get("utility")
    if not utility:
        return []
    r = utility["retrieval"]
    md = [
        "## Utility",
        "",
        f"Retrieval among the {r['pool_size']} pairs of {r['pool']}:",
        "",
        "| recall | image → text | text → image | chance |",
        "|---|---|---|---|",
    ]
    for k in (1, 5, 10):
        if f"i2t_r{k}" in r:
            md.append(
                f"| R@{k} | {r[f'i2t_r{k}']:.3f} | {r[f't2i_r{k}']:.3f} | {r[f'chance_r{k}']:.3f} |"
            )
    attributes = utility.get("attributes")
    if attributes:
        md += ["", f"Zero-shot attributes of {attributes['n_images']} held-out images:", ""]
        md += ["| attribute | accuracy | chance | majority class |", "|---|---|---|---|"]
        for what in sorted(k.removesuffix("_acc") for k in attributes if k.endswith("_acc")):
            md.append(
                f"| {what} | {attributes[f'{what}_acc']:.3f} | "
                f"{_number(attributes.get(f'{what}_chance'))} | "
                f"{_number(attributes.get(f'{what}_majority'))} |"
            )
    privacy = results.privacy_summary(record)
    if privacy:
        md += ["", ", ".join(f"{k.removeprefix('privacy/')} = {v:.3g}" for k, v in privacy.items())]
    return md + [""]


def _plan(record: dict, names) -> list[str]:
    target, data = record["target"], record["data"]
    scored = list(names) + list(results.skipped(record))
    hit = "served from the cache" if target.get("cache_hit") else "trained by this job"
    return [
        "## The plan it ran",
        "",
        f"- target: {target['source']}, {target['model']} ({target['params']:,} parameters), "
        f"N={_known(target['size'])} members, T={_known(target['epochs'])} epochs; cache key "
        f"{target['cache_key']}, {hit}",
        f"- evaluation: K={data['member_eval']} members and {data['nonmember_eval']} non-members "
        f"({data['nonmembers']}, corpus {data['nonmember_corpus']})",
        f"- attacks: {', '.join(scored)}",
        f"- seed {record['seed']}, git {record['git']}",
        "",
    ]


def _training(job_dir: Path) -> list[str]:
    if not (job_dir / LOSS).exists():
        return []
    return [
        "## Training loss",
        "",
        f"![training loss]({LOSS})",
        "",
        f"Loss, learning rate, logit scale and samples/s per logged step: [{HISTORY}]({HISTORY}).",
        "",
    ]


def _interval(value, ci, spec=".3f") -> str:
    if value is None:
        return ""
    if not ci or ci[0] is None:
        return format(value, spec)
    return f"{value:{spec}} [{ci[0]:{spec}}, {ci[1]:{spec}}]"


def _number(value, spec=".3f") -> str:
    return "" if value is None else format(value, spec)


def _known(value) -> str:
    return "unknown" if value is None else str(value)
