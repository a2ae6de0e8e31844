"""Which members an attack exposes, and whether it is the same ones every time
(docs/design.md §6.8): each job's K members of highest score, the overlap of those sets between the
training seeds of one condition and from one N to the next at the same seed, each against a
permutation null; what the members exposed at every seed share, from their captions; and the TPR at
0.1% FPR at the largest N, as results.json reports it (exposure.json, and a section of
report.md)."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from itertools import combinations, pairwise

import numpy as np
from scipy import stats

from mia.evaluation import results, scores
from mia.report.rows import reference, scores_table
from mia.report.stats import IDENTITY

FILENAME = "exposure.json"
K = 50  # the most exposed members of a job
DRAWS = 2000  # random K-subsets behind each permutation null
RARE_SHARE = (
    0.01  # a word is rare in at most this share of a job's scored captions (and at least one)
)
# Per-pair attributes scores.parquet cannot give: the images are not in it.
UNAVAILABLE = (
    "image content: scores.parquet holds each pair's uid, caption and scores, not its image",
)


def analyse(
    rows, attack: str | None = None, k: int = K, draws: int = DRAWS, seed: int = 0
) -> dict | None:
    """exposure.json's content, or None where no two jobs can be compared (every comparison needs
    more than k members scored by both jobs, on i.i.d. non-members without shift, by `attack`: by
    default the sweep's reference attack, CSA)."""
    attack = attack or reference(rows)
    jobs = [
        r
        for r in rows
        if r["nonmembers"] == "iid"
        and not r["shift"]
        and scores_table(r) is not None
        and attack in scores_table(r).columns
    ]
    rng = np.random.default_rng(seed)
    seeds, persistent = across_seeds(jobs, attack, k, draws, rng)
    sizes = across_sizes(jobs, attack, k, draws, rng)
    if not seeds and not sizes:
        return None
    return {
        "attack": attack,
        "k": k,
        "draws": draws,
        "seed": seed,
        "across_seeds": seeds,
        "across_sizes": sizes,
        "persistent": persistent,
        "attributes_unavailable": list(UNAVAILABLE),
        "tpr_at_fpr_1e-3_at_largest_n": low_fpr_at_largest_n(jobs, attack),
    }


def members(table) -> set:
    return set(table.loc[table["label"] == 1, "uid"])


def top_members(table, attack: str, uids: set, k: int) -> set:
    """The k members among `uids` that `attack` scores highest in a job's scores table (ties: the
    file's order, as scores.most_exposed breaks them)."""
    keep = (table["label"] == 0) | table["uid"].isin(uids)
    return set(scores.most_exposed(table.loc[keep, list(scores.FIXED) + [attack]], k)["uid"])


def mean_overlap(sets) -> float:
    """The mean size of the pairwise intersections of the sets."""
    return float(np.mean([len(a & b) for a, b in combinations(sets, 2)]))


def null_overlaps(n: int, k: int, n_sets: int, draws: int, rng) -> np.ndarray:
    """The mean pairwise overlap of n_sets independent random k-subsets of n items, `draws` times:
    what the overlap of top-k sets would be if the ranking were chance."""
    picks = np.stack(
        [[rng.choice(n, k, replace=False) for _ in range(n_sets)] for _ in range(draws)]
    )
    return np.mean(
        [
            (picks[:, a, :, None] == picks[:, b, None, :]).sum(axis=(1, 2))
            for a, b in combinations(range(n_sets), 2)
        ],
        axis=0,
    )


def against_null(tops, n: int, k: int, draws: int, rng) -> dict:
    """The observed mean pairwise overlap of the top-k sets `tops`, drawn from n shared members, the
    null's mean and the one-sided permutation p-value of an overlap at least as large."""
    observed, null = mean_overlap(tops), null_overlaps(n, k, len(tops), draws, rng)
    return {
        "overlap": observed,
        "null_mean": float(null.mean()),
        "p_value": float((1 + (null >= observed).sum()) / (1 + draws)),
    }


def _condition(r) -> dict:
    return {key: r[key] for key in IDENTITY if key != "nonmembers"}


def across_seeds(jobs, attack, k, draws, rng) -> tuple[list[dict], list[dict]]:
    """(one overlap entry per condition with two seeds or more, one entry of the members in the top
    k of every seed per condition), over the members every seed scored."""
    groups = defaultdict(list)
    for r in jobs:
        groups[tuple(r[key] for key in IDENTITY)].append(r)
    overlaps, persistent = [], []
    for rs in groups.values():
        shared = set.intersection(*(members(scores_table(r)) for r in rs))
        if len(rs) < 2 or len(shared) <= k:
            continue
        tops = [top_members(scores_table(r), attack, shared, k) for r in rs]
        head = {**_condition(rs[0]), "seeds": [r["seed"] for r in rs], "n_shared": len(shared)}
        overlaps.append({**head, **against_null(tops, len(shared), k, draws, rng)})
        always = set.intersection(*tops)
        persistent.append(
            {
                **head,
                "uids": sorted(always),
                "n": len(always),
                "chance": len(shared)
                * (k / len(shared)) ** len(rs),  # E|intersection| of random sets
                "attributes": compare_attributes(
                    caption_attributes(scores_table(rs[0])), always, shared
                ),
            }
        )
    return overlaps, persistent


def across_sizes(jobs, attack, k, draws, rng) -> list[dict]:
    """One overlap entry from each N to the next N at the same seed and everything else, over the
    members both jobs scored."""
    groups = defaultdict(list)
    for r in jobs:
        groups[tuple(r[key] for key in IDENTITY if key != "size") + (r["seed"],)].append(r)
    out = []
    for rs in groups.values():
        rs = sorted(rs, key=lambda r: r["size"])
        for a, b in pairwise(rs):
            shared = members(scores_table(a)) & members(scores_table(b))
            if len(shared) <= k:
                continue
            tops = [top_members(scores_table(r), attack, shared, k) for r in (a, b)]
            out.append(
                {
                    **_condition(a),
                    "seed": a["seed"],
                    "to_size": b["size"],
                    "n_shared": len(shared),
                    **against_null(tops, len(shared), k, draws, rng),
                }
            )
    return out


def caption_attributes(table) -> dict:
    """{attribute: {uid: value}} from a job's captions: the caption's length in words, and its count
    of distinct rare words (lower-cased; rare among the job's scored captions, members and
    non-members, the only captions at hand)."""
    captions = dict(zip(table["uid"], table["caption"].astype(str), strict=True))
    words = {uid: re.findall(r"\w+", c.lower()) for uid, c in captions.items()}
    df = Counter(w for ws in words.values() for w in set(ws))
    rare = max(1, int(RARE_SHARE * len(captions)))
    return {
        "caption_words": {uid: len(c.split()) for uid, c in captions.items()},
        "rare_words": {uid: sum(df[w] <= rare for w in set(ws)) for uid, ws in words.items()},
    }


def compare_attributes(attributes, chosen: set, among: set) -> dict:
    """Each attribute's mean over the `chosen` members and over the rest of `among`, with a
    two-sided Mann-Whitney p-value (None where a side is empty or every value is equal)."""
    out = {}
    for name, values in attributes.items():
        a = np.array([values[u] for u in sorted(chosen)], float)
        b = np.array([values[u] for u in sorted(among - chosen)], float)
        p = None
        if a.size and b.size and np.ptp(np.r_[a, b]) > 0:
            p = float(stats.mannwhitneyu(a, b, alternative="two-sided").pvalue)
        out[name] = {
            "chosen_mean": float(a.mean()) if a.size else None,
            "others_mean": float(b.mean()) if b.size else None,
            "p_value": p,
        }
    return out


def low_fpr_at_largest_n(jobs, attack) -> list[dict]:
    """The attack's TPR at 0.1% FPR with its 95% interval and whether the non-members resolve it,
    for every job at the largest N, as results.json reports them."""
    if not jobs:
        return []
    largest = max(r["size"] for r in jobs)
    out = []
    for r in sorted(
        (r for r in jobs if r["size"] == largest), key=lambda r: (r["epochs"], r["seed"])
    ):
        m = results.attack_metrics(r["_results"])[attack]
        out.append(
            {
                **_condition(r),
                "seed": r["seed"],
                "tpr": m["tpr_at_fpr_1e-3"],
                "ci95": m["tpr_at_fpr_1e-3_ci95"],
                "resolved": m["low_fpr_resolved"]["1e-3"],
            }
        )
    return out


def markdown(exposure) -> list[str]:
    """report.md's section on exposure; [] where there is nothing to compare."""
    if exposure is None:
        return []
    k, attack = exposure["k"], exposure["attack"]
    md = [
        "## Exposure: the same members every time?",
        "",
        f"Each job's {k} members of highest {attack} score, among the members both jobs scored. "
        f"Overlap: the mean number shared by two jobs; chance: the mean over {exposure['draws']} "
        f"random {k}-subsets; p: one-sided permutation p-value of an overlap at least as large "
        "(docs/design.md §6.8).",
        "",
    ]
    if exposure["across_seeds"]:
        md += [
            f"| N | T | seeds | members | overlap | chance | p | in every seed's top {k} | "
            "chance |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for o, p in zip(exposure["across_seeds"], exposure["persistent"], strict=True):
            md.append(
                f"| {o['size']} | {o['epochs']} | {len(o['seeds'])} | {o['n_shared']} | "
                f"{o['overlap']:.1f} | {o['null_mean']:.1f} | {o['p_value']:.3g} | {p['n']} | "
                f"{p['chance']:.1f} |"
            )
        md.append("")
    if exposure["across_sizes"]:
        md += [
            "| T | seed | N -> next N | members | overlap | chance | p |",
            "|---|---|---|---|---|---|---|",
        ]
        for o in exposure["across_sizes"]:
            md.append(
                f"| {o['epochs']} | {o['seed']} | {o['size']} -> {o['to_size']} | "
                f"{o['n_shared']} | {o['overlap']:.1f} | {o['null_mean']:.1f} | "
                f"{o['p_value']:.3g} |"
            )
        md.append("")
    for p in exposure["persistent"]:
        if not p["n"]:
            continue
        cells = "; ".join(
            f"{name.replace('_', ' ')} {a['chosen_mean']:.2f} against {a['others_mean']:.2f}"
            + ("" if a["p_value"] is None else f" (Mann-Whitney p {a['p_value']:.3g})")
            for name, a in p["attributes"].items()
        )
        md.append(
            f"- N={p['size']}, T={p['epochs']}: the {p['n']} members in every seed's top {k} "
            f"against the other members: {cells}"
        )
    md.append(f"- not available: {'; '.join(exposure['attributes_unavailable'])}")
    rows = exposure["tpr_at_fpr_1e-3_at_largest_n"]
    if rows:
        md += [
            "",
            f"{attack} TPR at 0.1% FPR at the largest N ({rows[0]['size']}), as each job reports "
            "it:",
            "",
        ]
        for r in rows:
            ci = "" if r["ci95"] is None else f" [{r['ci95'][0]:.4f}, {r['ci95'][1]:.4f}]"
            md.append(
                f"- T={r['epochs']}, seed {r['seed']}: {r['tpr']:.4f}{ci}"
                + ("" if r["resolved"] else " (unresolved: fewer than 10 false positives allowed)")
            )
    return md
