"""report.md, the sweep report's text: every section in order, from the analyses build.py ran
(the tables themselves are rendered by the modules that ran them)."""

from __future__ import annotations

from pathlib import Path

from mia.report import canaries as canary_report
from mia.report import comparison, exposure, finetune, law, markdown, privacy_utility
from mia.report import inference as inference_report
from mia.report.checks import markdown as checks_markdown
from mia.report.fits import NOISY_REL_CI, SATURATED_AUC
from mia.report.rows import baseline_of, label, reference


def report_markdown(
    sweep_name: str,
    rows,
    pts,
    names,
    *,
    compared,
    family,
    fit_results,
    law_results,
    di_rows,
    c_rows,
    exposed,
    checks,
    plots: dict,
    rocs,
    ft_rows=(),
) -> str:
    """The text of report.md for the sweep folder `sweep_name`, its plots linked by file name;
    `family`: the number of verdicts comparison.adjust Holm-adjusted together."""
    seeds = sorted({r["seed"] for r in rows})
    base, ref = baseline_of(rows), label(reference(rows))
    md = (
        [
            f"# Sweep report: {sweep_name}",
            "",
            f"{len(rows)} jobs, {len(pts)} conditions, training seeds {seeds}; attacks: "
            f"{', '.join(names)}.",
            "",
            markdown.points_table(pts, names),
            "",
            "TPR@1% marked (unresolved): the non-members allow fewer than 10 false positives at "
            f"1% FPR. vs {ref}: the seed-mean AUC difference from {ref} on the same pairs, with a "
            "95% t interval over the seeds' differences and the two-sided p of a t test over them; "
            'with one seed (marked "over pairs, 1 seed"), that job\'s paired bootstrap interval '
            "over its pairs and DeLong's p, which speak for that one target only. p is adjusted by "
            f"Holm's method over {comparison.family_text(family)}; "
            f'"beats" / "below" only where the adjusted p < {markdown.VERDICT_ALPHA:g} '
            "(docs/design.md §6.9).",
            "",
        ]
        + comparison.markdown(compared, reference(rows), family)
        + [
            "## Scaling fits (log10 gap on log10 x)",
            "",
            "A point is left out of a fit when its members are saturated (Gaussian AUC from the "
            f"gap >= {SATURATED_AUC}) or its gap is noise (95% CI reaching 0 or wider than "
            f"+-{NOISY_REL_CI:.0%} of the gap); the plot shows every point.",
            "",
        ]
        + markdown.fit_lines(fit_results)
        + [""]
        + law.markdown(law_results)
        + [""]
        + markdown.shift_tables(rows, names)
        + [""]
        + markdown.skipped_lines(rows)
    )
    minus_baseline = markdown.minus_baseline_table(rows, [n for n in names if n != base])
    if minus_baseline:
        md += [
            f"## AUC minus {base} AUC",
            "",
            f"Each attack's AUC minus the caption-only {base} baseline's AUC in the same job: the "
            "part of its signal that the member / non-member distribution shift alone does not "
            "explain.",
            "",
            minus_baseline,
        ]
    if privacy_utility.applies(rows):
        md += ["## Privacy and utility", ""] + privacy_utility.table(rows, names) + [""]
    if ft_rows:
        md += ["## Fine-tuned against from scratch", ""] + finetune.markdown(ft_rows) + [""]
    md += [""] + inference_report.markdown(di_rows, reference(rows))
    md += [""] + canary_report.markdown(c_rows, reference(rows))
    md += [""] + exposure.markdown(exposed)
    md += checks_markdown(checks)
    md += (
        ["", "## Plots", ""]
        + [f"![{k}]({Path(p).name})" for k, p in plots.items()]
        + [f"![roc]({Path(p).name})" for p in rocs]
    )
    return "\n".join(md) + "\n"
