"""The job spec: the whole config parsed and checked once, before any corpus is generated or indexed
and any model trained. Every stage takes the part it needs; nothing is parsed twice or overwritten
after the fact. A bad value ends the job with one line naming its key (mia/validate.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from mia import distributed, tracking
from mia.data.corpus import Audit, Data
from mia.data.splits import scored_size
from mia.defenses.base import NoDefense
from mia.evaluation import dataset_inference
from mia.training.spec import SHADOW_SEEDS, TrainSpec
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
        require(
            is_int(cfg.seed) and 0 <= cfg.seed < SHADOW_SEEDS,
            "seed",
            cfg.seed,
            "must be an integer in [0, 2**31) (the seeds above are the shadows')",
        )
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
            if isinstance(data, Audit):  # an audit's members are what a CLIP trained elsewhere saw
                raise ConfigError(
                    "target",
                    "train",
                    "data=audit audits a CLIP trained elsewhere: set target=checkpoint "
                    "target.path=<its checkpoint file or exported open_clip folder>",
                )
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
            if getattr(target, "needs_sibling", False):  # target=finetune
                raise ConfigError(
                    "target",
                    "finetune",
                    f"trains no shadow models, and attack.{shadows[0]} needs them: give reference "
                    f"models of your own (shadows.paths) or leave {shadows[0]} out of attack",
                )
            raise ConfigError(
                "target.train_shadows",
                False,
                f"attack.{shadows[0]} needs shadow models: set "
                "target.train_shadows=true (they then train like a target of the model and train "
                f"groups: model=..., train.epochs, ...), give reference models of your own "
                f"(shadows.paths), or leave {shadows[0]} out of attack",
            )
        if getattr(target, "needs_sibling", False) and not data.has_sibling:
            raise ConfigError(
                "target",
                "finetune",
                f"pretrains on the shifted sibling corpus, which data={data.name} does not have: "
                "use data=synthetic",
            )
        train = build(
            cfg.train,
            "train",
            model=build(cfg.model, "model"),
            trainer=build(cfg.trainer, "trainer"),
            in_memory=data.in_memory,
            seed=int(cfg.seed),
            defense=build(cfg.defense, "defense") if cfg.get("defense") else NoDefense(),
            init=getattr(target, "init", None),  # target.init: fine-tune from a checkpoint
        )
        if target.trains:
            check_ranks(data.size, train)
        check_eval_size(data)
        analysis = build(cfg.analysis, "analysis", recursive=False)
        return cls(
            data=data,
            target=target,
            train=train,
            attacks=attacks,
            inference=analysis.inference,
            fpr_targets=analysis.fpr_targets,
            reference=analysis.reference,
            seed=int(cfg.seed),
            n_bootstrap=int(cfg.n_bootstrap),
            n=data.size if target.trains else target.size,
            logger=tracking.tracker(cfg.logger),
            cache_dir=Path(cfg.paths.cache_dir),
            log_dir=Path(cfg.paths.log_dir),
            config=OmegaConf.to_container(cfg, resolve=True),
        )


def check_ranks(n: int, train: TrainSpec) -> None:
    """Under DDP every rank takes an equal share of the N members and of each batch: a size the
    ranks do not divide is refused with the largest one they do."""
    world = distributed.world_size(train.trainer)
    ranks = f"the {world} ranks (trainer.devices x trainer.num_nodes)"
    for key, value in (("data.size", n), ("train.batch_size", train.batch_size)):
        require(
            value % world == 0,
            key,
            value,
            f"must divide by {ranks}, so that every rank trains on equal batches; the largest "
            f"that fits is {key}={value - value % world}",
        )


def check_eval_size(data: Data) -> None:
    """The non-member sets (eval_size K, known_size, the non-member half of aux_size, validation)
    must fit in what the corpus can hold out. Where the corpus is generated its size is known now,
    so sizes that cannot fit even before de-duplication are refused with the largest eval_size that
    does; a folder of shards is measured once it is indexed (mia/data/splits.py)."""
    room, n, split = data.held_out_room(), data.size, data.split
    if room is None or n is None:
        return
    k = scored_size(n - split.validation, split.eval_size, split.aux_size)
    others = split.known_size + split.aux_size // 2 + split.validation
    if k + others <= room:
        return
    need = (
        f"the non-member sets need {k + others} pairs (K={k} scored + known_size "
        f"{split.known_size} + aux_size/2 {split.aux_size // 2}"
        f"{f' + validation {split.validation}' if split.validation else ''}), and "
        f"data.corpus.size={data.corpus_size} can hold out at most {room} beside data.size={n}"
    )
    if room <= others:
        raise ConfigError(
            "data.split.known_size",
            split.known_size,
            f"{need}; lower data.split.known_size or data.split.aux_size, or raise "
            "data.corpus.size",
        )
    raise ConfigError(
        "data.split.eval_size",
        split.eval_size,
        f"{need}; the largest that fits is data.split.eval_size={room - others}, or raise "
        "data.corpus.size",
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


@dataclass(frozen=True)
class Analysis:
    """The `analysis` group (conf/analysis/default.yaml), checked: what every job computes from its
    attacks' scores beside their metrics. `law` is the sweep report's (mia/report/law.py)."""

    reference: tuple  # (name, Attack) of comparison.reference: every other attack's vs_csa
    inference: dict | None  # dataset_inference, checked; None where it is off
    fpr_targets: tuple  # calibrated.fpr_targets: the FPRs an auditor's thresholds aim at
    law: dict | None = None

    @classmethod
    def parse(
        cls, *, comparison=None, dataset_inference=None, calibrated=None, law=None
    ) -> Analysis:
        """From the group's nodes, unbuilt (mia.validate.build with recursive=False): the reference
        attack is built here, so that a bad setting of it names its own key."""
        return cls(
            reference=reference_attack(comparison),
            inference=inference_settings(dataset_inference),
            fpr_targets=fpr_targets(calibrated),
            law=law,
        )


def reference_attack(comparison) -> tuple:
    """(name, Attack) of `analysis.comparison.reference`: one attack config of conf/attack/, built
    as the job's attacks are, that scores every job (so no shadow models)."""
    key = "analysis.comparison.reference"
    node = comparison and comparison.get("reference")
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


def inference_settings(node) -> dict | None:
    """`analysis.dataset_inference` checked (a bad value names its key), or None where it is off."""
    if not node or not node.get("enabled", True):
        return None
    return dataset_inference.check_settings(dict(node))


def fpr_targets(node) -> tuple:
    """`analysis.calibrated.fpr_targets`, each a false-positive rate strictly between 0 and 1."""
    targets = node.get("fpr_targets") if node else [0.01, 0.001]
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
