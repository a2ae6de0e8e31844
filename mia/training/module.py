"""The training step of a target CLIP: a LightningModule around an open_clip model, with open_clip's
ClipLoss, AdamW, warm-up plus cosine, and a per-member count of how often each pair was trained on
(docs/design.md §3). The cached training stage that drives it is mia/training/stage.py."""

from __future__ import annotations

import lightning as L
import torch
from open_clip import ClipLoss

from mia.training.optim import clamp_temperature, optimizer
from mia.training.tokens import decay_after_steps, install, restore


class CLIPTarget(L.LightningModule):
    def __init__(self, model, spec, n_members: int):
        super().__init__()
        self.model, self.spec = model, spec
        self.defense = spec.defense
        # How often each member was trained on; checkpointed, so a resumed run keeps the count.
        self.register_buffer("seen", torch.zeros(n_members, dtype=torch.int32))

    def setup(self, stage):
        # Built here, not in __init__: rank and world size exist only once the trainer does.
        self.loss_fn = ClipLoss(
            local_loss=True,
            gather_with_grad=True,
            cache_labels=True,
            rank=self.trainer.global_rank,
            world_size=self.trainer.world_size,
        )
        # Only the token rows the members use train (mia/training/tokens.py); a streamed member set
        # is not at hand to list them, and then the whole table trains.
        used = self.trainer.datamodule.token_ids() if self.trainer.datamodule is not None else None
        self.__dict__["compact"] = None if used is None else install(self.model, used)
        # Kept out of the module tree, so checkpoints and model.pt hold the plain model's keys.
        self.__dict__["forward_fn"] = torch.compile(self.model) if self.spec.compile else self.model

    def training_step(self, batch, batch_idx):
        images, tokens, position = batch
        if self.defense.augments:  # seeded by (seed, step): a resumed run draws what it would have
            g = torch.Generator().manual_seed(self.spec.seed * 1_000_003 + self.global_step)
            images, tokens = self.defense.augment(images, tokens, g)
        out = self.forward_fn(images, tokens)
        loss = self.loss_fn(out["image_features"], out["text_features"], out["logit_scale"])
        # Counted over all ranks, so every rank (and the checkpoint rank 0 writes) holds the global
        # count.
        position = self.all_gather(position).reshape(-1)
        self.seen.index_add_(0, position, torch.ones_like(position, dtype=self.seen.dtype))
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/logit_scale", out["logit_scale"].detach())
        return loss

    def teardown(self, stage):
        restore(self.model)

    def on_train_batch_end(self, *args):
        clamp_temperature(self.model)

    def configure_optimizers(self):
        opt, sched = optimizer(self.model, self.spec, self.trainer.estimated_stepping_batches)
        if self.compact is not None:
            decay_after_steps(opt, self.compact)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
