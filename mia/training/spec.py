"""What defines a target: `TrainSpec` (everything training reads, built once from the job's config and
checked before any work starts), the training plan, and the target's cache key."""
from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from omegaconf import OmegaConf

from mia import defenses
from mia.cache import config_hash
from mia.data.dedup import DEFAULT_DEDUP, dedup_rules
from mia.data.generated import in_memory_bytes
from mia.sizes import parse_size


@dataclass(frozen=True)
class TrainerArgs:
    """The `trainer` group: lightning.Trainer's own arguments for a multi-rank job."""
    accelerator: str = "auto"
    devices: int = 1
    num_nodes: int = 1
    strategy: str = "auto"

    def lightning(self, world) -> dict:
        """Trainer keyword arguments for this process. A one-process job trains on its World's device
        alone (the local GPU it was given, or the CPU)."""
        if world.size > 1:
            return asdict(self)
        return {"accelerator": self.accelerator, "num_nodes": 1, "strategy": "auto",
                "devices": [world.device.index] if world.device.type == "cuda" else 1}


@dataclass(frozen=True)
class TrainSpec:
    """What training reads: the `model` and `train` groups, `data.in_memory`, `seed`, `trainer`."""
    model: dict
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    warmup_steps: int
    precision: str = "auto"
    compile: bool = False
    num_workers: int = 0
    progress_bar: bool = True
    in_memory: bool | str = True  # or "auto": in memory when the members fit IN_MEMORY_BUDGET
    seed: int = 0
    trainer: TrainerArgs = field(default_factory=TrainerArgs)
    defense: dict = field(default_factory=lambda: dict(defenses.NONE))  # the `defense` group (mia/defenses/)

    # (key, field, check, requirement): refused before any corpus is generated or model trained
    _RULES = (
        ("train.epochs", "epochs", lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
        ("train.batch_size", "batch_size", lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
        ("train.lr", "lr", lambda v: _is_num(v) and v > 0, "a number > 0"),
        ("train.weight_decay", "weight_decay", lambda v: _is_num(v) and v >= 0, "a number >= 0"),
        ("train.warmup_steps", "warmup_steps", lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
        ("train.num_workers", "num_workers", lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
        ("train.precision", "precision", lambda v: isinstance(v, str) and v, "'auto' or a Lightning precision"),
        ("train.compile", "compile", lambda v: isinstance(v, bool), "true or false"),
        ("train.progress_bar", "progress_bar", lambda v: isinstance(v, bool), "true or false"),
        ("data.in_memory", "in_memory", lambda v: isinstance(v, bool) or v == "auto", "true, false or auto"),
        ("seed", "seed", lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    )

    def __post_init__(self):
        for key, name, ok, requirement in self._RULES:
            value = getattr(self, name)
            if not ok(value):
                raise ValueError(f"{key}={value!r}: must be {requirement}")
        for key in ("devices", "num_nodes"):
            value = getattr(self.trainer, key)
            if not (_is_int(value) and value >= 1):
                raise ValueError(f"trainer.{key}={value!r}: must be an integer >= 1")
        if not self.model.get("name"):
            raise ValueError("model.name is not set: choose a model config, e.g. model=tiny")
        defenses.build(self.defense)  # refuses a bad defense.<setting>

    @classmethod
    def from_cfg(cls, cfg) -> "TrainSpec":
        train = OmegaConf.to_container(cfg.train, resolve=True)
        return cls(model=OmegaConf.to_container(cfg.model, resolve=True), in_memory=cfg.data.in_memory,
                   seed=cfg.seed, trainer=TrainerArgs(**OmegaConf.to_container(cfg.trainer, resolve=True)),
                   defense=OmegaConf.to_container(cfg.defense, resolve=True) if cfg.get("defense") else
                   dict(defenses.NONE), **train)

    def weights_key(self) -> dict:
        """The part of the spec that defines the trained weights (not how fast or where they train). A
        defense enters only when it changes the weights, so defense=none keeps every existing key."""
        key = {"model": self.model, "seed": self.seed,
               "train": {k: getattr(self, k) for k in ("epochs", "batch_size", "lr", "weight_decay",
                                                       "warmup_steps")}}
        defense = defenses.build(self.defense).weights_key()
        if defense is not None:
            key["defense"] = defense
        return key

    def precision_for(self, device: torch.device) -> str:
        if self.precision == "auto":
            return "bf16-mixed" if device.type == "cuda" else "32-true"
        return self.precision


# data.in_memory=auto holds the decoded members in memory up to this much, and streams them beyond
IN_MEMORY_BUDGET = 2 << 30


def plan(spec: TrainSpec, n: int, image_size: int, context_length: int, shards) -> dict:
    """What a target's training will read and hold, logged before it starts and kept in target.json:
    N, T, the samples trained on (N x T), the corpus on disk, and the members' memory if held."""
    held = in_memory_bytes(n, image_size, context_length)
    in_memory = spec.in_memory if isinstance(spec.in_memory, bool) else held <= IN_MEMORY_BUDGET
    return {"members": n, "epochs": spec.epochs, "samples": n * spec.epochs, "in_memory": in_memory,
            "members_memory_bytes": held if in_memory else 0,
            "corpus_disk_bytes": sum(Path(s).stat().st_size for s in shards)}


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def target_key(spec: TrainSpec, corpus_fingerprint: str, split_cfg, size, canaries: dict | None = None) -> str:
    """Everything that defines the trained weights, nothing that only concerns evaluation. The
    de-duplication rules shape the member pool, so they are part of it, but only when they are not
    the default: the keys of targets trained before the rules were selectable stay as they were.
    Likewise the canaries (mia/data/canaries.py, Canaries.key()) only when there are any."""
    w = spec.weights_key()
    split = {"seed": split_cfg.seed, "holdout": parse_size(split_cfg.holdout)}
    rules = dedup_rules(split_cfg)
    if set(rules) != set(DEFAULT_DEDUP):
        split["dedup"] = sorted(rules)
    extra = {"canaries": canaries} if canaries else {}
    return config_hash({"corpus": corpus_fingerprint, "split": split, "size": parse_size(size), **w, **extra})


