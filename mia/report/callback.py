"""The Hydra callback that writes the sweep report when a multirun ends
(conf/hydra/default.yaml)."""

from __future__ import annotations

import logging
from pathlib import Path

from hydra.experimental.callback import Callback

from mia.report.build import build_report
from mia.report.checks import ScoresMismatch

log = logging.getLogger(__name__)


class ReportCallback(Callback):
    """Writes the report when a multirun ends (conf/hydra/default.yaml registers it)."""

    def on_multirun_end(self, config, **kwargs):
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            build_report(sweep_dir)
        except FileNotFoundError as err:  # every job failed before writing results
            log.warning("%s: no report", err)
        except ScoresMismatch as err:  # the report is written; the disagreement is the news
            log.error("%s", err)
        except Exception:  # the jobs' results are safe on disk; `python -m mia.report` can retry
            log.exception("sweep report failed; rerun: python -m mia.report %s", sweep_dir)
