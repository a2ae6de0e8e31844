"""Which members an attack exposes, and whether it is the same ones every time
(docs/design.md §6.8): each job's K members of highest score, the overlap of those sets between the
training seeds of one condition and from one N to the next at the same seed, each against a
permutation null; across seeds, the same overlap among the non-members as a control (the top
scores also pick pairs that are easy whatever their membership), and the same on per-pair calibrated
(LiRA) scores; what the members exposed at every seed share, from their captions; and the TPR at
0.1% FPR at the largest N, as results.json reports it (exposure.json, and a section of
report.md)."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from itertools import combinations, pairwise

import numpy as np
from scipy import stats

from mia.evaluation import results
from mia.report.rows import reference, scores_table
from mia.report.stats import IDENTITY

FILENAME = "exposure.json"
K = 50  # the most exposed members of a job
DRAWS = 2000  # random K-subsets behind each permutation null, and draws of the control's test
ALPHA = 0.05  # level of the permutation tests behind a finding
# What the across-seed overlap of the members' top k says, by its two tests (`finding`)
EXPOSED = "members stay exposed"  # above chance, and above the non-members' own overlap
EASY = "easy pairs, not membership"  # above chance, but the non-members' top k is as stable
CHANCE = "chance"  # the members' overlap is not above chance
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
    # the controls draw from a stream of their own: the overlaps' nulls stay as without them
    rng, controls = np.random.default_rng(seed), np.random.default_rng([seed, 1])
    seeds, persistent = across_seeds(jobs, attack, k, draws, rng, controls)
    sizes = across_sizes(jobs, attack, k, draws, rng)
    if not seeds and not sizes:
        return None
    # attacks calibrated per pair against reference models (Attack.calibrated_per_pair): where the
    # jobs ran one, the across-seed overlap and its control are repeated on its scores
    calibrated = []
    for name in sorted({n for r in jobs for n in r["_calibrated"]}):
        runs = [
            r
            for r in jobs
            if name != attack and name in r["_calibrated"] and name in scores_table(r).columns
        ]
        found = across_seeds(runs, name, k, draws, rng, controls)[0]
        if found:
            calibrated.append({"attack": name, "across_seeds": found})
    return {
        "attack": attack,
        "k": k,
        "draws": draws,
        "seed": seed,
        "alpha": ALPHA,
        "across_seeds": seeds,
        "across_sizes": sizes,
        "persistent": persistent,
        "calibrated": calibrated,
        "attributes_unavailable": list(UNAVAILABLE),
        "tpr_at_fpr_1e-3_at_largest_n": low_fpr_at_largest_n(jobs, attack),
    }


def scores_by_pair(rs, attack: str, label: int) -> tuple[list, np.ndarray]:
    """(uids, matrix [pair, job]) of the pairs of `label` (1 members, 0 non-members) that every job
    of `rs` scored, in the first job's file order, and each job's `attack` score of each."""
    sides = [scores_table(r).loc[lambda t: t["label"] == label] for r in rs]
    shared = set.intersection(*(set(side["uid"]) for side in sides))
    uids = [u for u in sides[0]["uid"] if u in shared]
    matrix = np.column_stack(
        [side.set_index("uid").loc[uids, attack].to_numpy(np.float64) for side in sides]
    )
    return uids, matrix


def top_rows(matrix, k: int) -> list[set]:
    """Each job's (column's) k rows of highest score; ties go to the earlier row, the file's order,
    as scores.most_exposed breaks them. A partition, not a sort: the controls call it thousands of
    times."""
    tops = []
    for col in -np.asarray(matrix, np.float64).T:
        kth = np.partition(col, k - 1)[k - 1]  # the k-th highest score, negated
        if np.isnan(kth):  # fewer than k scores: NaN ones last, as a stable sort puts them
            tops.append(set(np.argsort(col, kind="stable")[:k].tolist()))
            continue
        above = np.flatnonzero(col < kth)
        tops.append(
            set(above.tolist()) | set(np.flatnonzero(col == kth)[: k - above.size].tolist())
        )
    return tops


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


def excess_overlap(matrix, k: int) -> float:
    """The mean pairwise overlap of the jobs' top-k rows beyond the k^2 / n chance gives: sides
    of different sizes compare on one footing."""
    return mean_overlap(top_rows(matrix, k)) - k * k / len(matrix)


def control(members, nonmembers, k: int, draws: int, rng) -> dict:
    """Do the members' top k agree across jobs more than the non-members' do? `members` and
    `nonmembers` are [pair, job] score matrices. The difference of their excess overlaps; a
    one-sided permutation p-value, the pairs' labels shuffled (one shuffle for every job: a pair is
    the unit); and a 95% percentile interval from resampling each side's pairs (a pair drawn twice
    counts twice)."""
    n = len(members)
    observed = excess_overlap(members, k) - excess_overlap(nonmembers, k)
    pooled = np.vstack([members, nonmembers])
    null = np.empty(draws)
    for i in range(draws):
        p = rng.permutation(len(pooled))
        null[i] = excess_overlap(pooled[p[:n]], k) - excess_overlap(pooled[p[n:]], k)
    boot = [
        excess_overlap(members[rng.integers(n, size=n)], k)
        - excess_overlap(nonmembers[rng.integers(len(nonmembers), size=len(nonmembers))], k)
        for _ in range(draws)
    ]
    return {
        "difference": float(observed),
        "ci95": [float(q) for q in np.percentile(boot, [2.5, 97.5])],
        "p_value": float((1 + (null >= observed).sum()) / (1 + draws)),
    }


def finding(overlap: dict) -> str | None:
    """The members' across-seed overlap read with its control: EXPOSED only where it beats chance
    and the non-members' overlap; None where there was no control (too few shared non-members)."""
    if overlap["p_value"] >= ALPHA:
        return CHANCE
    if overlap["control"] is None:
        return None
    return EXPOSED if overlap["control"]["p_value"] < ALPHA else EASY


def _condition(r) -> dict:
    return {key: r[key] for key in IDENTITY if key != "nonmembers"}


def across_seeds(jobs, attack, k, draws, rng, controls) -> tuple[list[dict], list[dict]]:
    """(one overlap entry per condition with two seeds or more, one entry of the members in the top
    k of every seed per condition), over the members every seed scored; each overlap entry holds the
    non-members' overlap over the non-members every seed scored, the control (drawn from `controls`)
    and the finding."""
    groups = defaultdict(list)
    for r in jobs:
        groups[tuple(r[key] for key in IDENTITY)].append(r)
    overlaps, persistent = [], []
    for rs in groups.values():
        if len(rs) < 2:
            continue
        uids, scored = scores_by_pair(rs, attack, 1)
        if len(uids) <= k:
            continue
        others, other_scores = scores_by_pair(rs, attack, 0)
        tops = top_rows(scored, k)
        head = {**_condition(rs[0]), "seeds": [r["seed"] for r in rs], "n_shared": len(uids)}
        entry = {**head, **against_null(tops, len(uids), k, draws, rng)}
        entry["nonmembers"], entry["control"], always_non = None, None, set()
        if len(others) > k:
            other_tops = top_rows(other_scores, k)
            always_non = set.intersection(*other_tops)
            entry["nonmembers"] = {
                "n_shared": len(others),
                "overlap": mean_overlap(other_tops),
                "null_mean": k * k / len(others),
            }
            entry["control"] = control(scored, other_scores, k, draws, controls)
        entry["finding"] = finding(entry)
        overlaps.append(entry)
        always = {uids[i] for i in set.intersection(*tops)}
        persistent.append(
            {
                **head,
                "uids": sorted(always),
                "n": len(always),
                "chance": len(uids) * (k / len(uids)) ** len(rs),  # E|intersection| of random sets
                "nonmembers_n": len(always_non),
                "attributes": compare_attributes(
                    caption_attributes(scores_table(rs[0])), always, set(uids)
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
            uids, scored = scores_by_pair((a, b), attack, 1)
            if len(uids) <= k:
                continue
            out.append(
                {
                    **_condition(a),
                    "seed": a["seed"],
                    "to_size": b["size"],
                    "n_shared": len(uids),
                    **against_null(top_rows(scored, k), len(uids), k, draws, rng),
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


def control_markdown(overlaps, attack: str, k: int, persistent=None) -> list[str]:
    """The control of the across-seed overlaps: the non-members' overlap beside the members', their
    difference beyond chance with its interval and test, and what the two tests find."""
    if not any(o["control"] for o in overlaps):
        return [
            f"No control for {attack}: too few non-members scored by every seed; the members' "
            "overlap may reflect easy pairs, not membership.",
            "",
        ]
    md = [
        f"Control, {attack} scores: the same overlap among the non-members every seed scored. "
        "Difference: the members' overlap beyond chance minus the non-members', with a 95% "
        "interval (pairs resampled) and a one-sided permutation p-value (labels shuffled over "
        f"pairs). Members stay exposed only where both p-values are below {ALPHA}; an overlap "
        "above chance that the non-members match reflects easy pairs, not membership.",
        "",
        f"| N | T | members: overlap | non-members: overlap | chance | difference | p | "
        f"non-members in every top {k} | finding |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for i, o in enumerate(overlaps):
        c, n = o["control"], o["nonmembers"]
        always = "" if persistent is None else persistent[i]["nonmembers_n"]
        if c is None:
            md.append(
                f"| {o['size']} | {o['epochs']} | {o['overlap']:.1f} | | | | | | no control |"
            )
            continue
        md.append(
            f"| {o['size']} | {o['epochs']} | {o['overlap']:.1f} | {n['overlap']:.1f} | "
            f"{n['null_mean']:.1f} | {c['difference']:+.1f} [{c['ci95'][0]:+.1f}, "
            f"{c['ci95'][1]:+.1f}] | {c['p_value']:.3g} | {always} | {o['finding']} |"
        )
    return md + [""]


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
        md += control_markdown(exposure["across_seeds"], attack, k, exposure["persistent"])
    for c in exposure["calibrated"]:
        md += control_markdown(c["across_seeds"], c["attack"], k)
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
