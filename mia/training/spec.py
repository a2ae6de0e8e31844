"""What defines a target: `TrainSpec` (everything training reads, built once from the job's config
and checked before any work starts), the training plan, and the target's cache key."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch

from mia import checkpoint, distributed
from mia.cache import config_hash
from mia.data.dedup import DEFAULT_DEDUP
from mia.data.generated import in_memory_bytes
from mia.data.splits import SplitSpec
from mia.defenses.base import Defense, NoDefense
from mia.sizes import parse_size
from mia.validate import ConfigError, build, is_int, is_number, require


@dataclass(frozen=True)
class TrainerArgs:
    """The `trainer` group: lightning.Trainer's own arguments for a multi-rank job."""

    accelerator: str = "auto"
    devices: int = 1
    num_nodes: int = 1
    strategy: str = "auto"

    def __post_init__(self):
        for key in ("devices", "num_nodes"):
            value = getattr(self, key)
            require(
                is_int(value) and value >= 1, f"trainer.{key}", value, "must be an integer >= 1"
            )

    def lightning(self, world) -> dict:
        """Trainer keyword arguments for this process. A one-process job trains on its World's
        device alone (the local GPU it was given, or the CPU)."""
        if world.size > 1:
            return asdict(self)
        return {
            "accelerator": self.accelerator,
            "num_nodes": 1,
            "strategy": "auto",
            "devices": [world.device.index] if world.device.type == "cuda" else 1,
        }


# train.schedule: cosine over each job's own steps, or warm-up, stable, decay (optim.lr_factor)
SCHEDULES = ("cosine", "wsd")

# Training seeds: a job's `seed` (its target's) lies below SHADOW_SEEDS; every shadow trains with a
# seed at or above it (mia.training.shadows.shadow_seed), below Lightning's bound 2**32, so no
# shadow shares a target's seed, and with it its initial weights.
SHADOW_SEEDS = 2**31


@dataclass(frozen=True)
class TrainSpec:
    """What training reads: the `model` and `train` groups, `data.in_memory`, `seed`, `trainer`. The
    train group's settings are checked here; the others arrive checked (mia/job.py)."""

    model: dict
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    warmup_steps: int
    schedule: str = "cosine"  # or "wsd": warm-up, stable, decay (mia/training/optim.py, lr_factor)
    cooldown: float = 0.2  # wsd: a fraction (< 1) of the epochs, or a whole number of epochs
    branch_epochs: tuple = ()  # wsd: the T's whose cooldown starts this run leaves checkpoints at
    freeze_logit_scale: bool = False
    precision: str = "auto"
    compile: bool = False
    num_workers: int | str = 0  # or "auto": workers_for(the cores, the local ranks)
    progress_bar: bool = True
    checkpoint_s: float = 60
    in_memory: bool | str = True  # or "auto": in memory when the members fit IN_MEMORY_BUDGET
    seed: int = 0
    trainer: TrainerArgs = field(default_factory=TrainerArgs)
    defense: Defense = field(
        default_factory=NoDefense
    )  # the `defense` group, built (mia/defenses/)
    init: str | None = None  # target.init: the checkpoint training starts from; None: from scratch
    init_hash: str | None = None  # its content hash (mia.checkpoint.fingerprint), in weights_key

    # (key, field, check, requirement): refused before any corpus is generated or model trained
    _RULES = (
        ("train.epochs", "epochs", lambda v: is_int(v) and v >= 1, "an integer >= 1"),
        ("train.batch_size", "batch_size", lambda v: is_int(v) and v >= 1, "an integer >= 1"),
        ("train.lr", "lr", lambda v: is_number(v) and v > 0, "a number > 0"),
        ("train.weight_decay", "weight_decay", lambda v: is_number(v) and v >= 0, "a number >= 0"),
        ("train.warmup_steps", "warmup_steps", lambda v: is_int(v) and v >= 0, "an integer >= 0"),
        (
            "train.num_workers",
            "num_workers",
            lambda v: (is_int(v) and v >= 0) or v == "auto",
            "an integer >= 0 or auto",
        ),
        (
            "train.precision",
            "precision",
            lambda v: isinstance(v, str) and v,
            "'auto' or a Lightning precision",
        ),
        ("train.compile", "compile", lambda v: isinstance(v, bool), "true or false"),
        ("train.schedule", "schedule", lambda v: v in SCHEDULES, f"one of {', '.join(SCHEDULES)}"),
        (
            "train.cooldown",
            "cooldown",
            lambda v: is_number(v) and (0 < v < 1 or (is_int(v) and v >= 1)),
            "a fraction of the epochs in (0, 1) or a whole number of epochs >= 1",
        ),
        (
            "train.branch_epochs",
            "branch_epochs",
            lambda v: isinstance(v, tuple) and all(is_int(t) and t >= 1 for t in v),
            "a list of epochs >= 1",
        ),
        (
            "train.freeze_logit_scale",
            "freeze_logit_scale",
            lambda v: isinstance(v, bool),
            "true or false",
        ),
        ("train.progress_bar", "progress_bar", lambda v: isinstance(v, bool), "true or false"),
        (
            "train.checkpoint_s",
            "checkpoint_s",
            lambda v: is_number(v) and v >= 0,
            "a number of seconds >= 0",
        ),
    )

    def __post_init__(self):
        if isinstance(self.branch_epochs, (list, tuple)):  # frozen, and hashable: a tuple
            object.__setattr__(self, "branch_epochs", tuple(self.branch_epochs))
        for key, name, ok, requirement in self._RULES:
            value = getattr(self, name)
            require(ok(value), key, value, f"must be {requirement}")
        if self.branch_epochs and self.schedule != "wsd":
            raise ConfigError(
                "train.branch_epochs",
                list(self.branch_epochs),
                "branches cooldowns off a stable phase: set train.schedule=wsd, or leave it []",
            )
        if not self.model.get("name"):
            raise ConfigError(
                "model.name", need="is not set: choose a model config, e.g. model=tiny"
            )

    @classmethod
    def parse(cls, *, model, trainer, in_memory, seed, defense, init=None, **train) -> TrainSpec:
        """The `train` group (its `_target_`): its settings, with the job's parsed model, trainer,
        data.in_memory, seed, defense and target.init (checked by the target group)."""
        settings = {f.name for f in fields(cls)} - {"init", "init_hash"}  # init: target.init
        unknown = sorted(set(train) - settings)
        if unknown:
            raise ConfigError(
                f"train.{unknown[0]}", need="is not a setting of train (conf/train/default.yaml)"
            )
        return cls(
            model=model,
            in_memory=in_memory,
            seed=seed,
            trainer=trainer,
            defense=defense,
            init=None if init is None else str(init),
            init_hash=None if init is None else checkpoint.fingerprint(init),
            **train,
        )

    @classmethod
    def from_cfg(cls, cfg) -> TrainSpec:
        """From a composed config alone, as a test builds one (a job parses it in mia/job.py)."""
        return build(
            cfg.train,
            "train",
            model=build(cfg.model, "model"),
            trainer=build(cfg.trainer, "trainer"),
            in_memory=cfg.data.in_memory,
            seed=cfg.seed,
            defense=build(cfg.defense, "defense") if cfg.get("defense") else NoDefense(),
            init=cfg.target.get("init"),
        )

    def record(self) -> dict:
        """The spec as target.json keeps it (the defense as its settings)."""
        out = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in ("trainer", "defense")
        }
        return {
            **out,
            "trainer": asdict(self.trainer),
            "defense": {"name": self.defense.name, **self.defense.settings},
        }

    def weights_key(self, device: torch.device | None = None) -> dict:
        """The part of the spec that defines the trained weights (not how fast they train). A
        defense enters only when it changes the weights, so defense=none keeps every existing key;
        likewise the precision, resolved for `device` (default: where this spec's trainer trains),
        only when it is not fp32, so a bf16 GPU target never serves an fp32 job and every fp32 key
        stays as it was."""
        key = {
            "model": self.model,
            "seed": self.seed,
            "train": {
                k: getattr(self, k)
                for k in ("epochs", "batch_size", "lr", "weight_decay", "warmup_steps")
            },
        }
        # The schedule and the frozen temperature enter only when not the default (cosine, learned),
        # so every existing key stays as it was.
        if self.schedule != "cosine":
            key["train"].update(schedule=self.schedule, cooldown=self.cooldown)
        if self.freeze_logit_scale:
            key["train"]["freeze_logit_scale"] = True
        defense = self.defense.weights_key()
        if defense is not None:
            key["defense"] = defense
        if self.init_hash is not None:  # fine-tuned: the starting weights, by content
            key["init"] = self.init_hash
        precision = self.precision_for(
            device
            if device is not None or self.precision != "auto"
            else distributed.device_of(self.trainer)
        )
        if precision not in FP32:
            key["precision"] = precision
        return key

    def cooldown_epochs(self, epochs: int | None = None) -> int:
        """wsd: the epochs of the cooldown that ends a run of `epochs` (default: this spec's), at
        least one and at most all of them; a fraction rounds half up."""
        t = self.epochs if epochs is None else epochs
        n = int(self.cooldown * t + 0.5) if self.cooldown < 1 else int(self.cooldown)
        return min(t, max(1, n))

    def branch_points(self) -> list[int]:
        """wsd: the epochs at which this run's stable phase reaches the cooldown start of its own T
        and of each train.branch_epochs T (those after epoch 0 and within its stable phase), where
        it leaves a stable checkpoint."""
        own = self.epochs - self.cooldown_epochs()
        ends = {t - self.cooldown_epochs(t) for t in (*self.branch_epochs, self.epochs)}
        # a start past this run's own cooldown start is a longer run's to leave
        return sorted(e for e in ends if 1 <= e <= own)

    def precision_for(self, device: torch.device | None) -> str:
        if self.precision == "auto":
            return "bf16-mixed" if device is not None and device.type == "cuda" else "32-true"
        return self.precision

    def loader_workers(self) -> int:
        """train.num_workers as a number: `auto` is workers_for(this process's cores)."""
        if self.num_workers != "auto":
            return self.num_workers
        return workers_for(available_cores(), self.trainer.devices)


# Lightning's names of full fp32 training: a target trained so has the key it always had
FP32 = ("32-true", "32")
# train.num_workers=auto: enough loader workers to feed a GPU, leaving a core to the training
# process
MAX_AUTO_WORKERS = 8


def available_cores() -> int:
    """The cores this process may run on (its affinity where the OS has one, as under SLURM)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def workers_for(cores: int, local_ranks: int = 1) -> int:
    """Loader workers per rank for `cores` shared by `local_ranks` ranks: one core per rank stays
    with the training loop, the rest decode (at most MAX_AUTO_WORKERS each)."""
    return max(0, min(cores // max(1, local_ranks) - 1, MAX_AUTO_WORKERS))


# data.in_memory=auto holds the decoded members in memory up to this much, and streams them beyond
IN_MEMORY_BUDGET = 2 << 30


def plan(spec: TrainSpec, n: int, image_size: int, context_length: int, shards) -> dict:
    """What a target's training will read and hold, logged before it starts and kept in target.json:
    N, T, the samples trained on (N x T), the corpus on disk, and the members' memory if held."""
    held = in_memory_bytes(n, image_size, context_length)
    in_memory = spec.in_memory if isinstance(spec.in_memory, bool) else held <= IN_MEMORY_BUDGET
    return {
        "members": n,
        "epochs": spec.epochs,
        "samples": n * spec.epochs,
        "in_memory": in_memory,
        "members_memory_bytes": held if in_memory else 0,
        "corpus_disk_bytes": sum(Path(s).stat().st_size for s in shards),
    }


def target_key(
    spec: TrainSpec,
    corpus_fingerprint: str,
    split: SplitSpec,
    size: int,
    canaries: dict | None = None,
    device: torch.device | None = None,
) -> str:
    """Everything that defines the trained weights, nothing that only concerns evaluation. The
    de-duplication rules shape the member pool, so they are part of it, but only when they are not
    the default: the keys of targets trained before the rules were selectable stay as they were.
    Likewise the canaries (mia/data/canaries.py, Canaries.key()) only when there are any. `device`
    is where the target trains (the precision `auto` resolves to depends on it)."""
    return config_hash(_key_payload(spec, corpus_fingerprint, split, size, canaries, device))


def stable_key(
    spec: TrainSpec,
    corpus_fingerprint: str,
    split: SplitSpec,
    size: int,
    canaries: dict | None = None,
    device: torch.device | None = None,
) -> str:
    """A wsd target's stable phase: its key without the epochs and the cooldown, shared by every T
    trained with the same settings (mia/training/stage.py keeps its checkpoints under it)."""
    payload = _key_payload(spec, corpus_fingerprint, split, size, canaries, device)
    payload["train"] = {
        k: v for k, v in payload["train"].items() if k not in ("epochs", "cooldown")
    }
    return config_hash({**payload, "phase": "stable"})


def _key_payload(spec, corpus_fingerprint, split, size, canaries, device) -> dict:
    w = spec.weights_key(device)
    split = split if isinstance(split, SplitSpec) else SplitSpec.parse(split)
    drawn = {"seed": split.seed, "holdout": split.holdout}
    if set(split.dedup) != set(DEFAULT_DEDUP):
        drawn["dedup"] = sorted(split.dedup)
    extra = {"canaries": canaries} if canaries else {}
    return {"corpus": corpus_fingerprint, "split": drawn, "size": parse_size(size), **w, **extra}
