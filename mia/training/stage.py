"""The cached training stage: a CLIP trained on exactly the given member uids for T epochs, stored
under `.cache/targets/<key>/` (layout in mia/cache.py) and served from there on every later call;
or a CLIP trained elsewhere, loaded from its checkpoint (target=checkpoint)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import resource
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from mia import checkpoint, distributed
from mia.cache import Layout, atomic, atomic_write_text, config_hash, get_or_build
from mia.data.canaries import check_coverage
from mia.data.datamodule import PairDataModule
from mia.data.generated import Members
from mia.model import build_model
from mia.provenance import git_revision
from mia.sizes import parse_size
from mia.training import history, optim
from mia.training.module import CLIPTarget
from mia.training.spec import TrainSpec, plan, stable_key, target_key
from mia.validate import ConfigError, is_int, readable, require

log = logging.getLogger(__name__)


@dataclass
class Target:
    """The audited CLIP. `dir` is its cache folder (features live there); `checkpoint` is the file
    or folder its weights came from; `trained_uids` lists what it trained on, when mia trained
    it."""

    key: str
    dir: Path
    model: torch.nn.Module
    tokenizer: object
    preprocess: object
    cache_hit: bool
    train_s: float
    size: int | None
    epochs: int | None
    checkpoint: Path | str
    trained_uids: Path | None = None
    init: Path | str | None = None  # the weights training started from (target.init); None: scratch

    @property
    def exported(self) -> Path | None:
        """The open_clip folder of a target mia trained (load it with `local-dir:<folder>`)."""
        return self.dir / "open_clip" if self.trained_uids is not None else None


class TrainHere:
    """target=train: the target is trained here on the job's members, cached by `target_key`; from
    scratch, or fine-tuned from the checkpoint `target.init` (keyed by its content hash)."""

    trains = True
    trains_shadows = True
    size = epochs = None  # N and T are the job's own

    def __init__(self, *, init):
        require(
            init is None or (isinstance(init, str) and checkpoint.is_checkpoint(init)),
            "target.init",
            init,
            "no such checkpoint file or exported open_clip folder: point it at the weights to "
            "fine-tune from, or set it to null to train from scratch",
        )
        self.init = init

    def obtain(
        self,
        spec: TrainSpec,
        *,
        corpus,
        split,
        size: int,
        uids,
        canaries,
        cache_dir,
        logger,
        world,
        **_,
    ) -> Target:
        key = target_key(
            spec, corpus.fingerprint, split, size, canaries=canaries, device=world.device
        )
        stable = None
        if spec.schedule == "wsd":  # every T of these settings shares one stable phase
            stable = Layout(cache_dir).stable(
                stable_key(
                    spec, corpus.fingerprint, split, size, canaries=canaries, device=world.device
                )
            )
        return train_target(
            spec,
            corpus.shards,
            uids,
            cache_dir,
            key,
            logger=logger,
            world=world,
            size=size,
            stable=stable,
        )


class FromCheckpoint:
    """target=checkpoint: a CLIP trained elsewhere, loaded by open_clip (mia/checkpoint.py); nothing
    is trained, and its features are cached by the checkpoint's content hash."""

    trains = False

    def __init__(self, path=None, pretrained=None, size=None, epochs=None, train_shadows=False):
        if bool(path) == bool(pretrained):
            raise ConfigError(
                "target.path",
                need=f"{'and target.pretrained are both' if path else 'is not'} set: "
                "target=checkpoint needs exactly one of target.path (a checkpoint file or an "
                "exported "
                "open_clip folder) and target.pretrained (an open_clip pretrained tag)",
            )
        require(
            isinstance(train_shadows, bool),
            "target.train_shadows",
            train_shadows,
            "must be true or false",
        )
        require(
            epochs is None or (is_int(epochs) and epochs >= 1),
            "target.epochs",
            epochs,
            "must be null (unknown) or an integer >= 1",
        )
        if path:  # checked now, before any corpus is read: loading it waits for the splits
            found = readable(
                path,
                "target.path",
                folder=Path(path).is_dir(),
                fix="point it at a checkpoint file or an open_clip folder mia exported",
            )
            require(
                not found.is_dir() or (found / checkpoint.CONFIG_FILE).is_file(),
                "target.path",
                str(path),
                f"is a folder without {checkpoint.CONFIG_FILE}: point it at a checkpoint file, "
                "or at a folder mia exported (<target>/open_clip)",
            )
        self.path, self.pretrained, self.epochs = path, pretrained, epochs
        self.size = None if size is None else parse_size(size, "target.size")
        self.trains_shadows = train_shadows

    def obtain(self, spec: TrainSpec, *, cache_dir, world, **_) -> Target:
        return checkpoint_target(
            self.path,
            self.pretrained,
            spec.model,
            cache_dir,
            world.device,
            size=self.size,
            epochs=self.epochs,
        )


class InMemory:
    """A CLIP held in memory (mia.audit.audit): nothing is trained or read from disk, and its
    features are cached by a hash of its weights, so a model changed since gets features anew."""

    trains = False
    trains_shadows = False
    held = True  # lira / rmia need reference models (shadows.paths): there is no recipe to train by

    def __init__(self, model, preprocess, tokenizer, size=None, epochs=None):
        require(
            epochs is None or (is_int(epochs) and epochs >= 1),
            "epochs",
            epochs,
            "must be None (unknown) or an integer >= 1",
        )
        self.model, self.preprocess, self.tokenizer = model, preprocess, tokenizer
        self.size = None if size is None else parse_size(size, "size")
        self.epochs = epochs

    def obtain(self, spec: TrainSpec, *, cache_dir, world, **_) -> Target:
        key = f"memory-{weights_hash(self.model)}"
        self.model.eval().to(world.device)
        log.info("target %s: the model in memory (nothing trained)", key)
        return Target(
            key,
            Layout(cache_dir).checkpoint(key),
            self.model,
            self.tokenizer,
            self.preprocess,
            cache_hit=True,
            train_s=0.0,
            size=self.size,
            epochs=self.epochs,
            checkpoint="in memory",
        )


def weights_hash(model) -> str:
    """16 hex digits of sha256 over the model's state dict: names, dtypes, shapes and bytes."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)}".encode())
        h.update(flat.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def checkpoint_target(
    path, pretrained, model_cfg, cache_dir, device, size=None, epochs=None
) -> Target:
    """A CLIP trained elsewhere (a target=checkpoint, or a reference model of shadows.paths), loaded
    by open_clip onto `device`; its folder, named by the checkpoint's content hash, holds its
    features."""
    model, tokenizer, preprocess, fingerprint = checkpoint.load(
        path, pretrained, model_cfg, cache_dir
    )
    model.to(device)  # features and white-box attacks run on the job's device
    key = f"checkpoint-{config_hash(fingerprint)}"
    log.info("%s loaded from %s (nothing trained)", key, path or pretrained)
    return Target(
        key,
        Layout(cache_dir).checkpoint(key),
        model,
        tokenizer,
        preprocess,
        cache_hit=True,
        train_s=0.0,
        size=size,
        epochs=epochs,
        checkpoint=path or pretrained,
    )


def train_target(
    spec: TrainSpec,
    shards,
    uids,
    cache_dir: Path,
    key: str,
    logger=None,
    world=None,
    export: bool = True,
    size: int | None = None,
    stable: Path | None = None,
) -> Target:
    """Train (or load from the cache) a CLIP on exactly `uids`, read from `shards`, for T epochs.

    `key` names the cache entry: `target_key(...)` for the audited target; reference-model attacks
    pass their own keys for shadow models (same spec, other uids, `export=False`). With a multi-rank
    `world` every rank calls this together; rank 0 holds the cache lock and decides. `export` writes
    the weights as an open_clip folder (mia/checkpoint.py) beside model.pt. `stable` (a wsd
    schedule's shared folder, `stable_key`) holds stable-phase checkpoints: the run starts from the
    latest one at or before its own cooldown, and leaves one at each of its `branch_points`."""
    world = world or distributed.single(spec.trainer)
    tdir = Layout(cache_dir).target(key)
    model, tokenizer, preprocess = build_model(spec.model)
    timing = {"train_s": 0.0}

    def build():
        init = None if spec.init is None else _initial_weights(spec, cache_dir)
        timing["train_s"] = _fit(
            spec, model, preprocess, tokenizer, shards, uids, tdir, logger, world, stable, init
        )

    hit = get_or_build(tdir, build, world, done=tdir / "DONE")
    if hit:
        log.info("target cache hit: %s (N=%d, trained nothing)", tdir, len(uids))
    model.load_state_dict(torch.load(tdir / "model.pt", map_location="cpu", weights_only=True))
    model.eval()
    if export and world.is_main and not (tdir / "open_clip" / checkpoint.CONFIG_FILE).exists():
        checkpoint.export(model, spec.model, tdir / "open_clip")  # from the CPU: loadable anywhere
    if export and world.is_main and not (tdir / history.PLOT).exists():  # shadows keep the CSV only
        history.plot(tdir, f"N={len(uids)}, T={spec.epochs}")
    # Features, white-box attacks and shadow statistics then run where the job trains (its GPU).
    model.to(world.device)
    return Target(
        key,
        tdir,
        model,
        tokenizer,
        preprocess,
        hit,
        timing["train_s"],
        size or len(uids),
        spec.epochs,
        checkpoint=tdir / "model.pt",
        trained_uids=tdir / "trained_uids.txt",
        init=spec.init,
    )


def _initial_weights(spec: TrainSpec, cache_dir) -> dict:
    """The state dict of target.init, refused naming the key where the model group's architecture
    cannot hold it."""
    start, _, _, _ = checkpoint.load(spec.init, None, spec.model, cache_dir)
    state = start.state_dict()
    model, _, _ = build_model(spec.model)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ConfigError(
            "target.init",
            spec.init,
            f"its weights do not fit model={spec.model['name']} "
            f"({str(err).splitlines()[0]}): choose the model group of its architecture",
        ) from None
    return state


def initial_model(spec: TrainSpec):
    """The model training from scratch starts from: seeded by spec.seed alone, independent of what
    was built before; the global RNGs are left where training reads them."""
    L.seed_everything(spec.seed, workers=True)
    model, _, _ = build_model(spec.model)
    return model


def _fit(
    spec: TrainSpec,
    model,
    preprocess,
    tokenizer,
    shards,
    uids,
    tdir,
    logger,
    world,
    stable=None,
    init=None,
) -> float:
    t0 = time.time()
    model_init = initial_model(spec)
    # fine-tuning (target.init) starts from its weights; the seeded build above keeps the RNG where
    # training from scratch would find it
    model.load_state_dict(model_init.state_dict() if init is None else init)
    size = model.visual.image_size
    todo = plan(
        spec,
        len(uids),
        size[0] if isinstance(size, (tuple, list)) else size,
        getattr(tokenizer, "context_length", 77),
        shards,
    )
    generated = uids.extra if isinstance(uids, Members) else 0
    log.info(
        "training N=%d (%d of them generated past the shards) for T=%d epochs: %d samples; corpus "
        "on disk "
        "%.0f MB; members %s; peak memory so far %.2f GB",
        todo["members"],
        generated,
        todo["epochs"],
        todo["samples"],
        todo["corpus_disk_bytes"] / 1e6,
        f"to be held in memory, {todo['members_memory_bytes'] / 1e6:.0f} MB"
        if todo["in_memory"]
        else "streamed",
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
    )
    defense = spec.defense
    if defense.fit is not None:  # a training loop of its own (dp_sgd: Poisson-sampled, no resume)
        if generated:
            raise ConfigError(
                "data.size",
                len(uids),
                f"runs {generated} pairs past the shards, and defense="
                f"{defense.name} loads its members from them: lower data.size to the member pool",
            )
        seen = defense.fit(spec, model, preprocess, tokenizer, shards, uids, world, tdir, optim)
        return _save(spec, model, shards, uids, tdir, world, t0, todo, sampled=seen)
    module = CLIPTarget(model, spec, len(uids))
    dm = PairDataModule(
        shards,
        uids,
        preprocess,
        tokenizer,
        spec.batch_size,
        spec.loader_workers(),
        todo["in_memory"],
        spec.seed,
        world.rank,
        world.size,
    )
    ckpt_dir = tdir / "ckpt"
    last = ckpt_dir / "last.ckpt"
    callbacks = [EpochCheckpoint(ckpt_dir, spec.checkpoint_s), history.Throughput()]
    start = last if last.exists() else None
    if start is not None:
        log.info("resuming target training from %s", last)
    if stable is not None:
        callbacks.append(StableCheckpoint(stable, spec.branch_points()))
        if start is None:
            start = branch_start(stable, spec.epochs - spec.cooldown_epochs())
        if start is not None and start.parent == stable:
            log.info("branching from the stable phase at %s", start)
            # target.json's plan: the epochs this target took from the shared stable phase
            todo["stable_epochs_taken"] = int(start.stem.removeprefix("epoch-"))
    trainer = L.Trainer(
        max_epochs=spec.epochs,
        **spec.trainer.lightning(world),
        plugins=[world.cluster],
        use_distributed_sampler=False,  # MemberOrder already splits the ranks
        precision=spec.precision_for(world.device),
        # the history on disk (mia/training/history.py) beside the job's logger
        logger=[lg for lg in (logger, history.csv_logger(tdir)) if lg is not None]
        if world.is_main
        else False,
        default_root_dir=str(tdir),
        callbacks=callbacks,
        enable_model_summary=False,
        enable_progress_bar=spec.progress_bar and world.is_main,
        log_every_n_steps=history.cadence(len(uids), spec.batch_size),
        num_sanity_val_steps=0,
    )
    trainer.fit(module, datamodule=dm, ckpt_path=str(start) if start is not None else None)
    if (
        trainer.current_epoch < spec.epochs
    ):  # interrupted (e.g. Ctrl-C): keep the checkpoint, no DONE
        raise RuntimeError(
            f"training of {tdir} stopped at epoch {trainer.current_epoch}/{spec.epochs}; "
            "run again to resume from its last checkpoint"
        )

    seen = module.seen.cpu()
    if not bool((seen == spec.epochs).all()):
        raise RuntimeError(
            f"member coverage check failed: {int((seen == 0).sum())} members never seen, "
            f"counts range {int(seen.min())}..{int(seen.max())}, expected {spec.epochs} each"
        )
    # duplicated canaries (mia/data/canaries.py): each uid copies x T times; generated members are
    # never repeated
    if not isinstance(uids, Members) and len(set(uids)) < len(uids):
        check_coverage(uids, seen.numpy(), spec.epochs)
    return _save(spec, model, shards, uids, tdir, world, t0, todo)


class EpochCheckpoint(ModelCheckpoint):
    """Epoch-end checkpoints only: a mid-epoch resume would replay part of an epoch and train some
    members more often than others. One file, overwritten (Lightning writes it atomically), at the
    first epoch end `every_s` seconds after the last one, and at the last epoch: writing a small
    model's 41 MB every few seconds costs more than the epochs a kill would lose."""

    def __init__(self, folder: Path, every_s: float):
        super().__init__(
            dirpath=str(folder),
            filename="last",
            save_top_k=1,
            monitor=None,
            every_n_epochs=1,
            save_on_train_epoch_end=True,
            enable_version_counter=False,
        )
        self.every_s, self.last_s = every_s, time.monotonic()

    def on_train_epoch_end(self, trainer, pl_module):
        if (
            trainer.current_epoch + 1 >= trainer.max_epochs
            or time.monotonic() - self.last_s >= self.every_s
        ):
            super().on_train_epoch_end(trainer, pl_module)
            self.last_s = time.monotonic()


def stable_checkpoint(stable: Path, epoch: int) -> Path:
    """The stable phase's checkpoint after `epoch` epochs (a Lightning checkpoint: weights,
    optimiser, schedule, per-member counts and loop state)."""
    return Path(stable) / f"epoch-{epoch}.ckpt"


def branch_start(stable: Path, end: int) -> Path | None:
    """The latest stable checkpoint at or before epoch `end` (a run's cooldown start), if any."""
    found = [
        (int(p.stem.removeprefix("epoch-")), p)
        for p in Path(stable).glob("epoch-*.ckpt")
        if p.stem.removeprefix("epoch-").isdigit()
    ]
    found = [(e, p) for e, p in found if e <= end]
    return max(found)[1] if found else None


class StableCheckpoint(Callback):
    """A wsd run's stable-phase state at each of `epochs` (epoch ends before its cooldown): the
    start of those T's cooldowns, kept for their targets (mia/training/spec.py, branch_points)."""

    def __init__(self, stable: Path, epochs):
        self.stable, self.epochs = Path(stable), set(epochs)

    def on_train_epoch_end(self, trainer, pl_module):
        epoch = trainer.current_epoch + 1
        path = stable_checkpoint(self.stable, epoch)
        # rank 0 decides for all: saving is collective, and another job may write the file meanwhile
        if epoch not in self.epochs or trainer.strategy.broadcast(path.exists(), src=0):
            return
        self.stable.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.tmp{os.getpid()}{path.suffix}")
        trainer.save_checkpoint(tmp)  # every rank calls it; rank 0 writes
        if trainer.is_global_zero:
            tmp.replace(path)


def _save(spec: TrainSpec, model, shards, uids, tdir, world, t0, todo: dict, sampled=None) -> float:
    """model.pt, trained_uids.txt, target.json (with the training `plan`), history.csv and DONE;
    `sampled` counts how often each member was drawn where that is random (Poisson sampling),
    summarised in target.json."""
    train_s = time.time() - t0
    if not world.is_main:
        return train_s
    with atomic(tdir / "model.pt") as tmp:
        torch.save(model.state_dict(), tmp)
    # The generated members' uids follow from their index range (target.json "generated")
    listed = uids.base if isinstance(uids, Members) else uids
    atomic_write_text(tdir / "trained_uids.txt", "\n".join(listed) + "\n")
    meta = {
        "spec": spec.record(),
        "seed": spec.seed,
        "git": git_revision(),
        "plan": todo,
        "generated": uids.describe() if isinstance(uids, Members) else None,
        "size": len(uids),
        "epochs": spec.epochs,
        "train_s": train_s,
        "world_size": world.size,
        "precision": spec.precision_for(world.device),
        "device": str(world.device),
        "num_workers": spec.loader_workers(),
        "shards": [str(s) for s in shards],
        "samples_per_s": len(uids) * spec.epochs / train_s,
    }
    if sampled is not None:
        meta["times_sampled"] = {
            "min": int(sampled.min()),
            "mean": float(sampled.float().mean()),
            "max": int(sampled.max()),
        }
    atomic_write_text(tdir / "target.json", json.dumps(meta, indent=1))
    history.write(tdir)
    atomic_write_text(tdir / "DONE", "")
    shutil.rmtree(tdir / "ckpt", ignore_errors=True)
    return train_s
