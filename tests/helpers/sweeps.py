"""Fake jobs and sweeps for the sweep report's tests: a results.json in the format mia/pipeline.py
writes, beside a scores.parquet it agrees with (the report checks one against the other), built from
known cosines and attack scores; and simulated per-seed cosines of a scaling curve."""

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from mia.data.splits import MEMBER_EVAL, NONMEMBER_EVAL
from mia.evaluation import metrics, results, scores, scoring, utility
from tests.helpers.config import CONF

REFERENCE = "csa"  # analysis.comparison.reference of the fake jobs
PAIRS = 20  # evaluation pairs per side of a fake job: its AUCs lie on a grid of 1 / PAIRS**2


def _target(name: str) -> str:
    """The class conf/attack/<name>.yaml builds (the report reads Attack.baseline from it); a name
    with no config of its own is a CSA-like attack."""
    path = Path(CONF) / "attack" / f"{name}.yaml"
    return OmegaConf.load(path)[name]["_target_"] if path.exists() else "mia.attacks.csa.CSA"


@dataclass
class Job:
    record: dict  # results.json
    table: pd.DataFrame  # scores.parquet


def scores_with_auc(auc: float, n: int = PAIRS) -> tuple[np.ndarray, np.ndarray]:
    """(member, non-member) scores whose AUC is `auc` rounded to a multiple of 1 / n**2: non-members
    score 0 .. n-1, and member i scores just above as many of them as its share of the wins."""
    wins = round(auc * n * n)
    beats = np.full(n, wins // n)
    beats[: wins % n] += 1
    return beats - 0.5, np.arange(n, dtype=float)


def cosines_with_gap(gap: float, n: int = PAIRS) -> tuple[np.ndarray, np.ndarray]:
    """(member, non-member) cosines: non-members spread tightly around 0.5, members `gap` above
    them."""
    nonmember = 0.5 + 0.001 * np.linspace(-1, 1, n)
    return nonmember + gap, nonmember


def fake_job(
    size=1000,
    epochs=40,
    gap=0.1,
    *,
    aucs=None,
    cos=None,
    attacks=None,
    seed=0,
    nonmembers="iid",
    shift=0.0,
    shift_parts=None,
    gaussian_auc=0.6,
    dataset_inference=None,
    swapped=None,
) -> Job:
    """A job whose cosines have the member / non-member `gap` (or are `cos`: (member, non-member)),
    and whose attacks have the AUCs `aucs` ({attack: AUC}, on the grid of scores_with_auc) or the
    scores `attacks` ({attack: (member, non-member)}); by default csa scores 0.5 + gap (at most
    0.95) and the blind baseline 0.5. Every metric comes from those arrays, as mia.pipeline computes
    it; Attacks but csa are compared with CSA's scores, the cosines (vs_csa), as a job compares
    them; `gaussian_auc` overrides the gap's own, to place the point in or out of the saturated
    regime. Dataset inference runs in the report only with `dataset_inference` settings. `swapped`
    marks the non-members a shift swapped: each attack then has its AUC on the others, as a shifted
    job records it."""
    member_cos, nonmember_cos = cos if cos is not None else cosines_with_gap(gap)
    if attacks is None:
        aucs = aucs or {"csa": 0.5 + min(gap, 0.45), "blind": 0.5}
        attacks = {name: scores_with_auc(auc) for name, auc in aucs.items()}
    gap_record = metrics.gap(member_cos, nonmember_cos, n_bootstrap=50, seed=seed)
    gap_record["gaussian_auc"] = gaussian_auc
    inference = {"enabled": dataset_inference is not None, **(dataset_inference or {})}
    config = {
        "n_bootstrap": 200,
        "logger": {"backend": "none"},
        "data": {"split": {"seed": 0}},
        "train": {"weight_decay": 0.1},
        "analysis": {"dataset_inference": inference},
        "attack": {name: {"_target_": _target(name)} for name in attacks},
    }
    record = results.new(
        config=config,
        git="0123abc",
        seed=seed,
        target={
            "source": "train",
            "size": size,
            "epochs": epochs,
            "model": "tiny",
            "params": 12345,
            "cache_key": f"k{size}_{epochs}",
            "cache_hit": False,
        },
        data={"nonmembers": nonmembers, "shift": shift, "shift_parts": shift_parts},
        gap=gap_record,
    )
    record["defense"] = {"name": "none", "label": "none"}
    rng = np.random.default_rng(0)
    image, text = rng.normal(size=(PAIRS, 8)), rng.normal(size=(PAIRS, 8))
    record["utility"] = {"retrieval": utility.recall_at_k(image, text), "attributes": None}
    # the reference's scores: its own where the job runs it (the report recomputes vs_csa from its
    # column), else the cosines, as a job recorded before analysis.comparison is read
    reference = attacks.get(REFERENCE, (member_cos, nonmember_cos))
    for name, (member, nonmember) in attacks.items():
        both = np.r_[member, nonmember]
        labels = np.r_[np.ones(len(member)), np.zeros(len(nonmember))]
        roc = metrics.roc_table(both, labels)
        vs_csa = (
            None
            if name == REFERENCE
            else metrics.paired_comparison(
                (member, nonmember), reference, n_bootstrap=20, seed=seed
            )
        )
        unshifted = (
            None
            if swapped is None
            else scoring.unshifted(
                (member, nonmember),
                swapped,
                None if name == REFERENCE else reference,
                20,
                seed,
            )
        )
        results.add_attack(
            record,
            name,
            metrics.roc_metrics(both, labels, n_bootstrap=20),
            0.1,
            {},
            {"fpr": [r["fpr"] for r in roc], "tpr": [r["tpr"] for r in roc]},
            reference=REFERENCE,
            vs_csa=vs_csa,
            calibrated=None,
            calibrated_skipped="a fake job has no known non-members",
            unshifted=unshifted,
        )
    results.add_scores(record, scores.FILENAME)
    sets = {
        MEMBER_EVAL: SimpleNamespace(
            uids=[f"m{i}" for i in range(len(member_cos))], cos=member_cos
        ),
        NONMEMBER_EVAL: SimpleNamespace(
            uids=[f"n{i}" for i in range(len(nonmember_cos))], cos=nonmember_cos
        ),
    }
    table = scores.frame(sets, {s: ["a caption"] * len(sets[s].uids) for s in sets}, attacks)
    return Job(record, table)


def write_job(folder, job: Job):
    folder.mkdir(parents=True)
    scores.write(folder / scores.FILENAME, job.table)
    results.write(folder / "results.json", job.record)


def write_sweep(root, jobs) -> object:
    """The jobs in folders 0, 1, ... of `root`, as a multirun leaves them; returns `root`."""
    for i, job in enumerate(jobs):
        write_job(root / str(i), job)
    return root


def scaling_sweep(rng, sizes, n_seeds, slope=-1.0, seed_sd=0.1, pair_sd=0.01, k=400, bend=0.0):
    """Per-seed (member, non-member) cosines whose seed-mean gap is 0.2 (N / 1000)^slope, bent by
    `bend` (the quadratic term in log-log), with a log-normal training-seed effect (sd `seed_sd` in
    log10) and Gaussian pair noise."""
    out = []
    for n in sizes:
        jobs = []
        for _ in range(n_seeds):
            lx = np.log10(n / 1000)
            gap = 0.2 * 10 ** (slope * lx + bend * lx**2) * 10 ** rng.normal(0, seed_sd)
            nonmember = rng.normal(0.3, pair_sd, k)
            jobs.append((rng.normal(0.3, pair_sd, k) + gap, nonmember))
        out.append(jobs)
    return out
