"""The job spec: the whole config parsed and checked once, before any corpus is generated or indexed
and any model trained. Every stage takes the part it needs; nothing is parsed twice or overwritten
after the fact. A bad value ends the job with one line naming its key (mia/validate.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from mia import tracking
from mia.data.corpus import Data
from mia.defenses.base import NoDefense
from mia.evaluation import dataset_inference
from mia.training.spec import TrainSpec
from mia.validate import ConfigError, build, is_int, require


@dataclass(frozen=True)
class JobSpec:
    data: Data  # conf/data/<option>: corpus, N, non-members, shift, split sizes, canaries
    target: object  # conf/target/<option>: mia.training.stage.TrainHere or FromCheckpoint
    train: TrainSpec  # model, train, trainer, defense (built), seed
    attacks: dict  # {name: Attack}, in the order of the attack group
    inference: dict | None  # analysis.dataset_inference, checked; None where it is off
    fpr_targets: tuple  # analysis.calibrated.fpr_targets: the FPRs an auditor's thresholds aim at
    reference: tuple  # (name, Attack) of analysis.comparison.reference: every other attack's vs_csa
    seed: int
    n_bootstrap: int
    n: int | None  # the target's N: data.size where it trains here, target.size of a checkpoint
    logger: object  # conf/logger/<option>: mia.tracking.Wandb or NoTracking
    cache_dir: Path
    log_dir: Path  # runs outside Hydra write under <log_dir>/runs
    config: dict  # the resolved config, as results.json and the W&B run keep it

    @classmethod
    def parse(cls, cfg, target=None) -> JobSpec:
        """The job of `cfg`; `target`, where given, stands for the one cfg.target would build (a
        model held in memory: mia/audit.py)."""
        require(is_int(cfg.seed) and cfg.seed >= 0, "seed", cfg.seed, "must be an integer >= 0")
        require(
            is_int(cfg.n_bootstrap) and cfg.n_bootstrap >= 0,
            "n_bootstrap",
            cfg.n_bootstrap,
            "must be an integer >= 0 (0: no intervals)",
        )
        attacks = build_attacks(cfg.attack)
        target = build(cfg.target, "target") if target is None else target
        data = build(cfg.data, "data")
        if data.size is None and target.trains:
            raise ConfigError(
                "data.size",
                need="is not set: target=train trains on the first N members; set "
                "e.g. data.size=10k",
            )
        shadows = [
            name
            for name, attack in attacks.items()
            if attack.needs_shadows and not attack.shadows.paths  # reference models of its own
        ]
        if shadows and getattr(target, "held", False):  # a model in memory: no recipe to train by
            raise ConfigError(
                f"attack.{shadows[0]}",
                need="needs shadow models, and a model held in memory has no recipe to train them "
                "by: give reference models of your own (shadows.paths=[{checkpoint: ..., uids: "
                f"...}}, ...]) or leave {shadows[0]} out of the attacks",
            )
        if shadows and not target.trains_shadows:
            raise ConfigError(
                "target.train_shadows",
                False,
                f"attack.{shadows[0]} needs shadow models: set "
                "target.train_shadows=true (they then train like a target of the model and train "
                f"groups: model=..., train.epochs, ...), give reference models of your own "
                f"(shadows.paths), or leave {shadows[0]} out of attack",
            )
        train = TrainSpec.parse(
            cfg.train,
            model=OmegaConf.to_container(cfg.model, resolve=True),
            trainer=build(cfg.trainer, "trainer"),
            in_memory=data.in_memory,
            seed=int(cfg.seed),
            defense=build(cfg.defense, "defense") if cfg.get("defense") else NoDefense(),
            init=getattr(target, "init", None),  # target.init: fine-tune from a checkpoint
        )
        return cls(
            data=data,
            target=target,
            train=train,
            attacks=attacks,
            inference=inference_settings(cfg),
            fpr_targets=fpr_targets(cfg),
            reference=reference_attack(cfg),
            seed=int(cfg.seed),
            n_bootstrap=int(cfg.n_bootstrap),
            n=data.size if target.trains else target.size,
            logger=tracking.tracker(cfg.logger),
            cache_dir=Path(cfg.paths.cache_dir),
            log_dir=Path(cfg.paths.log_dir),
            config=OmegaConf.to_container(cfg, resolve=True),
        )


def build_attacks(attack_cfg) -> dict:
    """{name: Attack} of the `attack` group; a bad setting is refused naming attack.<name>.<key>."""
    if not attack_cfg:
        raise ConfigError(
            "attack", need="is empty: choose at least one, e.g. attack=csa or 'attack=[csa,wsa]'"
        )
    attacks = {}
    for name, acfg in attack_cfg.items():
        attacks[name] = build(acfg, f"attack.{name}", relative=True)
        attacks[name].key = f"attack.{name}"
    return attacks


def reference_attack(cfg) -> tuple:
    """(name, Attack) of `analysis.comparison.reference`: one attack config of conf/attack/, built as the
    job's attacks are, that scores every job (so no shadow models)."""
    key = "analysis.comparison.reference"
    node = cfg.get("analysis") and cfg.analysis.get("comparison")
    node = node and node.get("reference")
    require(
        node is not None and len(node) == 1,
        key,
        None if node is None else list(node),
        "must hold one attack: set attack@analysis.comparison.reference=<a file of conf/attack/>",
    )
    ((name, acfg),) = node.items()
    attack = build(acfg, f"{key}.{name}", relative=True)
    attack.key = f"{key}.{name}"
    require(
        not attack.needs_shadows,
        key,
        name,
        "trains shadow models, and the reference is scored in every job: choose one without",
    )
    return name, attack


def inference_settings(cfg) -> dict | None:
    """`analysis.dataset_inference` checked (a bad value names its key), or None where it is off."""
    node = cfg.get("analysis") and cfg.analysis.get("dataset_inference")
    di = OmegaConf.to_container(node, resolve=True) if node else None
    if not di or not di.get("enabled", True):
        return None
    return dataset_inference.check_settings(di)


def fpr_targets(cfg) -> tuple:
    """`analysis.calibrated.fpr_targets`, each a false-positive rate strictly between 0 and 1."""
    node = cfg.get("analysis") and cfg.analysis.get("calibrated")
    targets = (
        OmegaConf.to_container(node, resolve=True).get("fpr_targets") if node else [0.01, 0.001]
    )
    key = "analysis.calibrated.fpr_targets"
    require(
        isinstance(targets, list) and targets,
        key,
        targets,
        "must be a non-empty list of FPRs, e.g. [0.01, 0.001]",
    )
    for f in targets:
        require(
            isinstance(f, (int, float)) and not isinstance(f, bool) and 0 < f < 1,
            key,
            targets,
            f"holds {f!r}: each target must be a false-positive rate strictly between 0 and 1, "
            "e.g. 0.01",
        )
    return tuple(float(f) for f in targets)
