"""The sweep report (mia/report/build.py says what it writes): `python -m mia.report <sweep dir>`,
and the Hydra callback that runs it when a multirun ends (conf/hydra/default.yaml names
mia.report.ReportCallback)."""

from mia.report.build import build_report
from mia.report.callback import ReportCallback
from mia.report.cli import main

__all__ = ["ReportCallback", "build_report", "main"]
