"""A trained CLIP's training history on disk, W&B or not: Lightning's CSVLogger beside the job's
logger, one row per logged step (loss, learning rate, logit scale, samples/s), merged into
`history.csv` in the target's cache folder when training ends, with its loss plot `loss.png`.
A job copies both into its run folder (`training_history.csv`, `training_loss.png`)."""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path

import pandas as pd
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger

from mia import plots
from mia.cache import atomic_write_text

FILE = "history.csv"
PLOT = "loss.png"
PARTS = "history"  # CSVLogger's folders while training: one per run of it (a resume adds one)
COLUMNS = ("step", "epoch", "loss", "lr", "logit_scale", "samples_per_s")
IN_RUN = {FILE: "training_history.csv", PLOT: "training_loss.png"}
EVERY_N_STEPS = 10  # logging cadence; less where an epoch is shorter, so every epoch has a row


def cadence(n: int, batch_size: int) -> int:
    """Lightning's log_every_n_steps: every 10 steps, or once an epoch where an epoch has fewer."""
    return max(1, min(EVERY_N_STEPS, math.ceil(n / batch_size)))


def csv_logger(tdir: Path) -> CSVLogger:
    """A CSVLogger writing a new part under `tdir/history/`: a resumed run keeps the rows of the
    run it resumes (`write` drops those it replays)."""
    done = len(list((tdir / PARTS).glob("part*"))) if (tdir / PARTS).exists() else 0
    # every logged row written at once (a row per 10 steps at most): a killed run keeps its rows
    return CSVLogger(
        save_dir=str(tdir), name=PARTS, version=f"part{done:03d}", flush_logs_every_n_steps=1
    )


class Throughput(Callback):
    """Logs the learning rate each step trains with, and the samples per second (all ranks) since
    its epoch began. Logging only: nothing here touches the model or a random generator."""

    def on_train_epoch_start(self, trainer, pl_module):
        self.t0, self.samples = time.monotonic(), 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        lr = trainer.optimizers[0].param_groups[0]["lr"]
        pl_module.log("train/lr", float(lr), batch_size=len(batch[0]))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.samples += len(batch[0]) * trainer.world_size
        rate = self.samples / max(time.monotonic() - self.t0, 1e-9)
        pl_module.log("train/samples_per_s", rate, batch_size=len(batch[0]))


def write(tdir: Path) -> Path | None:
    """history.csv from the parts CSVLogger wrote (rows a resumed run replayed taken from the
    resumed run), and the parts removed; None where nothing was logged (a defense's own loop)."""
    frames = [pd.read_csv(p) for p in sorted((tdir / PARTS).glob("part*/metrics.csv"))]
    frames = [f.rename(columns=lambda c: c.removeprefix("train/")) for f in frames if len(f)]
    if not frames:
        shutil.rmtree(tdir / PARTS, ignore_errors=True)
        return None
    later = [f["step"].min() for f in frames[1:]] + [float("inf")]
    kept = [f[f["step"] < first] for f, first in zip(frames, later, strict=True)]
    table = pd.concat(kept, ignore_index=True)
    table = table[table["loss"].notna()] if "loss" in table else table
    table = table[[c for c in COLUMNS if c in table]]
    atomic_write_text(tdir / FILE, table.to_csv(index=False))
    shutil.rmtree(tdir / PARTS, ignore_errors=True)
    return tdir / FILE


def plot(tdir: Path, title: str) -> Path | None:
    """loss.png beside history.csv (None where there is no history)."""
    if not (tdir / FILE).exists():
        return None
    table = pd.read_csv(tdir / FILE)
    return plots.training_loss(table["step"], table["loss"], tdir / PLOT, title)


def copy_to(tdir: Path, out: Path) -> list[Path]:
    """The target's history.csv and loss.png copied into a job's run folder, where they exist."""
    copied = []
    for name, as_name in IN_RUN.items():
        if (tdir / name).exists():
            copied.append(Path(shutil.copyfile(tdir / name, out / as_name)))
    return copied
