"""The verdicts of experiments/attack_comparison.md, from results.csv here (one row per job):
each attack's per-seed paired difference from CSA (AUC at 1k, 4k and 16k; TPR at 1% FPR at 4k and
16k) and gradnorm_pure's from gradnorm (AUC), a t interval and t test over the seeds
(mia.report.stats.seed_interval), and Holm's adjustment over all 68 (mia.report.stats.holm).
Writes verdicts.csv beside it. Run from the repository root:
PYTHONPATH=. python experiments/figures/attack_comparison/verdicts.py"""

import csv
from pathlib import Path

from mia.report.stats import holm, seed_interval

HERE = Path(__file__).parent
ATTACKS = ["aea", "mcd", "wsa", "wsa_gomez", "blind", "clmia", "gradnorm", "gradnorm_pure"]
ATTACKS += ["paramgrad", "lira", "rmia", "imgagree", "txtagree"]
# The page's family: every difference it gives a verdict on (TPR@1% is unresolved at 1k).
TESTS = [(a, "csa", "auc", n) for n in (1000, 4000, 16000) for a in ATTACKS]
TESTS += [(a, "csa", "tpr_at_fpr_1e-2", n) for n in (4000, 16000) for a in ATTACKS]
TESTS += [("gradnorm_pure", "gradnorm", "auc", n) for n in (1000, 4000, 16000)]


def main():
    rows = list(csv.DictReader(open(HERE / "results.csv")))
    found = []
    for attack, against, metric, size in TESTS:
        jobs = sorted((r for r in rows if int(r["size"]) == size), key=lambda r: int(r["seed"]))
        deltas = [float(r[f"{attack}/{metric}"]) - float(r[f"{against}/{metric}"]) for r in jobs]
        found.append(seed_interval(deltas))
    adjusted = holm([f["p"] for f in found])
    with open(HERE / "verdicts.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            ["attack", "against", "metric", "size", "seeds", "delta", "ci95_lo", "ci95_hi"]
            + ["p", "p_holm"]
        )
        for test, s, h in zip(TESTS, found, adjusted, strict=True):
            w.writerow([*test, s["n"], s["mean"], *s["ci"], s["p"], h])


if __name__ == "__main__":
    main()
