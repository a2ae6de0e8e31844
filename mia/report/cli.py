"""`python -m mia.report <sweep dir> [--no-wandb | --law-only]`: the sweep report, rebuilt from the
jobs' results; exit status 1 where results.json and scores.parquet disagree (the report is written
first). --law-only refits the two-factor law of a written report from its points.csv."""

from __future__ import annotations

import argparse
import sys

from mia.report import build
from mia.report.checks import ScoresMismatch


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=build.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("sweep_dir", help="a multirun folder, e.g. outputs/multiruns/<stamp>")
    parser.add_argument("--no-wandb", action="store_true", help="do not log the report run to W&B")
    parser.add_argument(
        "--law-only",
        action="store_true",
        help="refit only the two-factor law of a written report from its points.csv and "
        "multirun.yaml (build.rebuild_law), without the jobs",
    )
    args = parser.parse_args(argv)
    if args.law_only:
        build.rebuild_law(args.sweep_dir)
        return
    try:
        build.build_report(args.sweep_dir, wandb_log=not args.no_wandb)
    except ScoresMismatch as err:
        print(err, file=sys.stderr)
        sys.exit(1)
