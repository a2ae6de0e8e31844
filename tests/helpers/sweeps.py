"""Simulated sweeps for the report's tests: per-seed cosines of a scaling curve."""
import numpy as np


def scaling_sweep(rng, sizes, n_seeds, slope=-1.0, seed_sd=0.1, pair_sd=0.01, k=400, bend=0.0):
    """Per-seed (member, non-member) cosines whose seed-mean gap is 0.2 (N / 1000)^slope, bent by
    `bend` (the quadratic term in log-log), with a log-normal training-seed effect (sd `seed_sd` in
    log10) and Gaussian pair noise."""
    out = []
    for n in sizes:
        jobs = []
        for _ in range(n_seeds):
            lx = np.log10(n / 1000)
            gap = 0.2 * 10 ** (slope * lx + bend * lx ** 2) * 10 ** rng.normal(0, seed_sd)
            nonmember = rng.normal(0.3, pair_sd, k)
            jobs.append((rng.normal(0.3, pair_sd, k) + gap, nonmember))
        out.append(jobs)
    return out
