"""The training history on disk (mia/training/history.py): one CSV row per logged step with the
loss, learning rate, logit scale and samples/s, a loss plot beside the cached weights, both copied
into the job's run folder; a resumed run's rows replace those it replayed."""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mia.training import history


@pytest.mark.slow
def test_the_default_job_keeps_one_row_per_logged_step(default_job):
    cfg, path = default_job
    record = json.loads(path.read_text())
    tdir = Path(record["target"]["checkpoint"]).parent
    table = pd.read_csv(tdir / history.FILE)
    assert tuple(table.columns) == history.COLUMNS
    n, epochs, batch = 300, 2, cfg.train.batch_size
    every = history.cadence(n, batch)
    steps = epochs * math.ceil(n / batch)
    assert every == math.ceil(n / batch)  # an epoch shorter than 10 steps: a row per epoch
    assert len(table) == steps // every
    assert list(table["step"]) == [every * (i + 1) - 1 for i in range(len(table))]
    assert list(table["epoch"]) == list(range(epochs))
    assert np.isfinite(table.to_numpy()).all()
    assert (table["lr"] > 0).all() and (table["samples_per_s"] > 0).all()
    assert (table["logit_scale"] > 1).all()  # exp of the learned temperature
    assert (tdir / history.PLOT).is_file() and not (tdir / history.PARTS).exists()
    for name, in_run in history.IN_RUN.items():
        assert (path.parent / in_run).read_bytes() == (tdir / name).read_bytes()


def test_cadence_is_every_10_steps_or_once_an_epoch():
    assert history.cadence(300, 128) == 3
    assert history.cadence(100_000, 128) == 10
    assert history.cadence(5, 128) == 1


def test_a_resumed_run_replaces_the_rows_it_replayed(tmp_path):
    def part(i, steps):
        folder = tmp_path / history.PARTS / f"part{i:03d}"
        folder.mkdir(parents=True)
        pd.DataFrame(
            {
                "epoch": [s // 10 for s in steps],
                "step": steps,
                "train/loss": [float(i)] * len(steps),
                "train/lr": 1e-3,
                "train/logit_scale": 14.0,
                "train/samples_per_s": 100.0,
            }
        ).to_csv(folder / "metrics.csv", index=False)

    part(0, [9, 19, 29])  # killed after step 29; its last checkpoint was at the end of step 19
    part(1, [29, 39])  # the resumed run replays step 29
    (tmp_path / history.PARTS / "part002").mkdir()  # a run killed before it logged anything
    assert history.write(tmp_path) == tmp_path / history.FILE
    table = pd.read_csv(tmp_path / history.FILE)
    assert tuple(table.columns) == history.COLUMNS
    assert list(table["step"]) == [9, 19, 29, 39] and list(table["loss"]) == [0, 0, 1, 1]
    assert not (tmp_path / history.PARTS).exists()


def test_a_training_without_logged_steps_writes_no_history(tmp_path):
    assert history.write(tmp_path) is None and not (tmp_path / history.FILE).exists()
    assert history.plot(tmp_path, "none") is None
