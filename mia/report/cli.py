"""`python -m mia.report <sweep dir> [--no-wandb]`: the sweep report, rebuilt from the jobs'
results; exit status 1 where results.json and scores.parquet disagree (the report is written
first)."""

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
    args = parser.parse_args(argv)
    try:
        build.build_report(args.sweep_dir, wandb_log=not args.no_wandb)
    except ScoresMismatch as err:
        print(err, file=sys.stderr)
        sys.exit(1)
