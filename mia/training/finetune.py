"""target=finetune: a CLIP pretrained here on another corpus, then fine-tuned on the job's members,
the way CLIPs trained on private data are usually made (docs/design.md §3.6).

The base model trains on the first `pretrain.size` pairs of the job's shifted sibling corpus
(data=synthetic), from scratch, with the job's model and recipe but its own epochs and seed; it is
cached like any target, by what defines its weights, so every fine-tuned target of a sweep starts
from the same base. The fine-tuned target is then a `target.init` target whose init is the base's
exported open_clip folder, keyed by that folder's content hash."""

from __future__ import annotations

import logging
from dataclasses import replace

from mia import checkpoint
from mia.cache import config_hash
from mia.sizes import parse_size
from mia.training.spec import TrainSpec
from mia.training.stage import Target, TrainHere, train_target
from mia.validate import ConfigError, is_int, require

log = logging.getLogger(__name__)


class FineTune(TrainHere):
    """target=finetune: pretrain on the sibling corpus (cached), then fine-tune on the members."""

    trains_shadows = (
        False  # shadows would need the same pretraining: not built (docs/design.md §3.6)
    )
    needs_sibling = True

    def __init__(self, *, pretrain_size, pretrain_epochs, pretrain_seed):
        super().__init__(init=None)
        self.pretrain_size = parse_size(pretrain_size, "target.pretrain_size")
        require(
            is_int(pretrain_epochs) and pretrain_epochs >= 1,
            "target.pretrain_epochs",
            pretrain_epochs,
            "an integer >= 1: the epochs the base model trains on the sibling corpus",
        )
        require(
            is_int(pretrain_seed) and pretrain_seed >= 0,
            "target.pretrain_seed",
            pretrain_seed,
            "an integer >= 0: the seed of the base model",
        )
        self.pretrain_epochs, self.pretrain_seed = int(pretrain_epochs), int(pretrain_seed)

    def base_spec(self, spec: TrainSpec) -> TrainSpec:
        """The base model's recipe: the job's, from scratch, with its own epochs and seed."""
        return replace(
            spec,
            epochs=self.pretrain_epochs,
            seed=self.pretrain_seed,
            init=None,
            init_hash=None,
            branch_epochs=(),
        )

    def pretrained(self, spec: TrainSpec, sibling, cache_dir, logger, world) -> Target:
        """The base model, trained on the sibling's first pretrain_size pairs (or the cache's)."""
        uids = sibling.index.uids
        if self.pretrain_size > len(uids):
            raise ConfigError(
                "target.pretrain_size",
                self.pretrain_size,
                f"the sibling corpus {sibling.name} holds {len(uids)} pairs: set it to at most "
                f"{len(uids)}, or raise data.corpus.size",
            )
        base = self.base_spec(spec)
        key = config_hash(
            {
                "pretrain": base.weights_key(world.device),
                "corpus": sibling.fingerprint,
                "size": self.pretrain_size,
            }
        )
        log.info(
            "base model: %d pairs of %s, T=%d, seed %d",
            self.pretrain_size,
            sibling.name,
            base.epochs,
            base.seed,
        )
        return train_target(
            base,
            sibling.shards,
            uids[: self.pretrain_size],
            cache_dir,
            f"base-{key}",
            logger,
            world,
        )

    def obtain(self, spec: TrainSpec, *, sibling, cache_dir, logger, world, **job) -> Target:
        base = self.pretrained(spec, sibling(), cache_dir, logger, world)
        start = base.exported
        tuned = replace(spec, init=str(start), init_hash=checkpoint.fingerprint(start))
        return super().obtain(tuned, cache_dir=cache_dir, logger=logger, world=world, **job)
