"""`make bench`: dataset inference (mia/evaluation/dataset_inference.py) at the evaluation-set sizes
of experiment=attack_comparison, against the baseline of scipy's mannwhitneyu on every drawn set
(the rank test the module replaces by precomputed ranks and counted wins), in the same run, on the
same draws. Writes outputs/bench/dataset_inference.json."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from benchmarks.bench import machine, write
from mia.evaluation import dataset_inference as di


def baseline(member, non, settings, seed: int = 0) -> list:
    """The p-values of every m by scipy's rank test on the module's own draws (the same
    generator)."""
    rng, out = np.random.default_rng(seed), []
    for m in (v for v in settings["m"] if v <= member.size and v <= non.size // 2):
        ref = non.size - m
        order = di._draw_sets(rng, non.size, settings["draws"], m)
        cand = di._draw_sets(rng, member.size, settings["draws"], m)[:, :m]
        refs = di._draw_sets(rng, non.size, settings["draws"], ref)
        out.append(
            (
                di.rank_test(non[order[:, :m]], non[order[:, m:]]),
                di.rank_test(member[cand], non[refs[:, :ref]]),
            )
        )
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", type=int, nargs="+", default=[500, 3500, 5000])
    parser.add_argument("--out", default="outputs/bench")
    args = parser.parse_args(argv)
    settings, rng, result = (
        di.check_settings(None),
        np.random.default_rng(0),
        {"machine": machine()},
    )
    for k in args.pairs:
        member, non = rng.normal(0.3, 1, k), rng.normal(0, 1, k)
        t0 = time.perf_counter()
        baseline(member, non, settings)
        t1 = time.perf_counter()
        di.dataset_inference(member, non, settings)
        t2 = time.perf_counter()
        result[f"K={k}"] = {
            "baseline_s": t1 - t0,
            "dataset_inference_s": t2 - t1,
            "speedup": (t1 - t0) / (t2 - t1),
        }
    write(result, Path(args.out) / "dataset_inference.json")


if __name__ == "__main__":
    main()
