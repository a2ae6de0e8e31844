"""Target training: a LightningModule around an open_clip CLIP, trained on exactly the first N
member uids for T epochs, cached by a hash of everything that defines the target.

Cache layout, per target:  <cache_dir>/targets/<key>/
    ckpt/last.ckpt      while training (resume point; removed once done)
    model.pt            final weights (state_dict)
    trained_uids.txt    the uids trained on, one per line, each seen exactly T times
    target.json         resolved config, seed, git revision, timings
    DONE                written last: without it the target is incomplete and never served
"""
from __future__ import annotations

import json
import logging
import math
import shutil
import subprocess
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import OmegaConf
from open_clip import ClipLoss
from torch.utils.data import BatchSampler, DataLoader, Sampler, TensorDataset

from mia import distributed
from mia.cache import atomic_write_text, config_hash, locked
from mia.data.pairs import PairStream, load_pairs
from mia.model import build_model
from mia.sizes import parse_size

log = logging.getLogger(__name__)


class CLIPTarget(L.LightningModule):
    def __init__(self, model, train_cfg: dict, n_members: int):
        super().__init__()
        self.model, self.cfg = model, train_cfg
        # How often each member was trained on; checkpointed, so a resumed run keeps the count.
        self.register_buffer("seen", torch.zeros(n_members, dtype=torch.int32))

    def setup(self, stage):
        # Built here, not in __init__: rank and world size exist only once the trainer does.
        self.loss_fn = ClipLoss(local_loss=True, gather_with_grad=True, cache_labels=True,
                                rank=self.trainer.global_rank, world_size=self.trainer.world_size)
        # Kept out of the module tree, so checkpoints and model.pt hold the plain model's keys.
        self.__dict__["forward_fn"] = torch.compile(self.model) if self.cfg.get("compile") else self.model

    def training_step(self, batch, batch_idx):
        images, tokens, position = batch
        out = self.forward_fn(images, tokens)
        loss = self.loss_fn(out["image_features"], out["text_features"], out["logit_scale"])
        # Counted over all ranks, so every rank (and the checkpoint rank 0 writes) holds the global count.
        position = self.all_gather(position).reshape(-1)
        self.seen.index_add_(0, position, torch.ones_like(position, dtype=self.seen.dtype))
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/logit_scale", out["logit_scale"].detach())
        return loss

    def on_train_batch_end(self, *args):
        with torch.no_grad():  # as in open_clip's training loop: temperature at most 100
            self.model.logit_scale.clamp_(0, math.log(100))

    def configure_optimizers(self):
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            # open_clip's rule: no weight decay on gains, biases, embeddings' scale
            (no_decay if p.ndim < 2 or "logit_scale" in name else decay).append(p)
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": self.cfg["weight_decay"]},
                                 {"params": no_decay, "weight_decay": 0.0}],
                                lr=self.cfg["lr"], betas=(0.9, 0.98), eps=1e-6,
                                fused=True)  # fused AdamW: 2x faster steps on the CPU too
        total = max(1, self.trainer.estimated_stepping_batches)
        warmup = min(self.cfg["warmup_steps"], total // 2)

        def schedule(step):  # linear warm-up, then cosine to zero
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class MemberOrder(Sampler):
    """The positions one rank trains on in an epoch. Each epoch's seeded permutation of the N members
    is cut into global batches of `batch_size`; rank r takes places r, r+W, ... of each. So across
    ranks every member is trained on exactly once per epoch, nothing is padded (DESIGN §7.6), and
    every rank gets the same number of equal-sized batches (DDP hangs otherwise, §7.4).

    With one rank this is the order `DataLoader(shuffle=True, generator=manual_seed(seed))` gives,
    but as a function of the epoch: a resumed run replays the order of an uninterrupted one."""

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        if batch_size % world:
            raise ValueError(f"train.batch_size={batch_size} (the global batch) must divide by the "
                             f"{world} ranks")
        if n % world:
            raise ValueError(f"data.size={n} must divide by the {world} ranks: with equal batches on every "
                             "rank, anything else would drop or repeat members")
        self.n, self.batch_size, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        self.epoch, self._cursor = 0, None  # (epoch, its permutation, generator state after it)

    def set_epoch(self, epoch: int):
        self.epoch = epoch

    def permutation(self, epoch: int) -> torch.Tensor:
        if self._cursor is None or self._cursor[0] > epoch:
            g, e, perm = torch.Generator().manual_seed(self.seed), -1, None
        else:
            e, perm, state = self._cursor
            g = torch.Generator()
            g.set_state(state)
        while e < epoch:
            torch.empty((), dtype=torch.int64).random_(generator=g)  # the DataLoader's per-epoch base seed
            perm, e = torch.randperm(self.n, generator=g), e + 1
            torch.randperm(self.n, generator=g)  # RandomSampler draws (and drops) one more at the end
        self._cursor = (e, perm, g.get_state())
        return perm

    def __iter__(self):
        perm = self.permutation(self.epoch)
        for start in range(0, self.n, self.batch_size):
            yield from perm[start:start + self.batch_size][self.rank::self.world].tolist()

    def __len__(self):
        return self.n // self.world


class PairDataModule(L.LightningDataModule):
    def __init__(self, shards, uids, preprocess, tokenizer, batch_size, num_workers, in_memory, seed,
                 rank=0, world=1):
        super().__init__()
        self.shards, self.uids, self.preprocess, self.tokenizer = shards, uids, preprocess, tokenizer
        self.batch_size, self.num_workers, self.in_memory, self.seed = batch_size, num_workers, in_memory, seed
        self.order = MemberOrder(len(uids), batch_size, seed, rank, world)

    def setup(self, stage):
        if self.in_memory:
            images, tokens = load_pairs(self.shards, self.uids, self.preprocess, self.tokenizer, "load members")
            self.dataset = InMemoryPairs(images, tokens, self.trainer.strategy.root_device)
        else:
            self.dataset = PairStream(self.shards, self.uids, self.preprocess, self.tokenizer, seed=self.seed,
                                      order=self.order)

    def train_dataloader(self):
        local_batch = self.batch_size // self.order.world
        if self.in_memory:
            return self.dataset.loader(self.order, local_batch)
        return DataLoader(self.dataset, batch_size=local_batch, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0, pin_memory=torch.cuda.is_available())


class InMemoryPairs(TensorDataset):
    """Decoded training pairs, held on the training device: at the embedded corpus' 32 px a whole
    member set fits in GPU memory, and a batch is then one gather instead of a host-to-device copy."""

    def __init__(self, images, tokens, device=torch.device("cpu")):
        super().__init__(images.to(device), tokens.to(device), torch.arange(len(images), device=device))

    def __getitems__(self, positions):  # the whole batch at once (DataLoader's batched fetch)
        idx = torch.as_tensor(positions, device=self.tensors[0].device)
        return tuple(t.index_select(0, idx) for t in self.tensors)

    def loader(self, order, local_batch) -> DataLoader:
        return DataLoader(self, batch_sampler=BatchSampler(order, local_batch, drop_last=False),
                          collate_fn=_whole_batch)


def _whole_batch(batch):
    return batch


@dataclass
class Target:
    key: str
    dir: Path
    model: torch.nn.Module
    tokenizer: object
    preprocess: object
    cache_hit: bool
    train_s: float
    size: int
    epochs: int

    @property
    def checkpoint(self) -> Path:
        return self.dir / "model.pt"

    @property
    def trained_uids(self) -> Path:
        return self.dir / "trained_uids.txt"


def git_revision() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def target_key(cfg, corpus_fingerprint: str) -> str:
    """Everything that defines the trained weights, nothing that only concerns evaluation."""
    return config_hash({
        "corpus": corpus_fingerprint,
        "split": {"seed": cfg.data.split.seed, "holdout": parse_size(cfg.data.split.holdout)},
        "size": parse_size(cfg.data.size),
        "model": OmegaConf.to_container(cfg.model, resolve=True),
        "train": {k: v for k, v in OmegaConf.to_container(cfg.train, resolve=True).items()
                  if k not in ("num_workers", "precision", "progress_bar", "compile")},
        "seed": cfg.seed,
    })


def precision(train_cfg, device: torch.device) -> str:
    if train_cfg.precision == "auto":
        return "bf16-mixed" if device.type == "cuda" else "32-true"
    return train_cfg.precision


def train_target(cfg, shards, uids, cache_dir: Path, key: str, logger=None, world=None) -> Target:
    """Train (or load from the cache) a CLIP on exactly `uids`, read from `shards`, for T epochs.

    `key` names the cache entry: `target_key(...)` for the audited target; reference-model attacks
    pass their own keys for shadow models (same model and training config, other uids). With a
    multi-rank `world` every rank calls this together; rank 0 holds the cache lock and decides."""
    world = world or distributed.single(cfg)
    tdir = Path(cache_dir) / "targets" / key
    model, tokenizer, preprocess = build_model(cfg.model)
    n = len(uids)
    done = tdir / "DONE"
    train_s, hit = 0.0, done.exists()
    if world.size > 1 or not hit:
        with locked(tdir) if world.is_main else nullcontext():
            hit = world.broadcast(done.exists())  # trained by another job while we waited?
            if not hit:
                train_s = _fit(cfg, model, tokenizer, preprocess, shards, list(uids), tdir, logger, world)
            world.barrier()  # model.pt and DONE are written before any rank reads them
    if hit:
        log.info("target cache hit: %s (N=%d, trained nothing)", tdir, n)
    model.load_state_dict(torch.load(tdir / "model.pt", map_location="cpu", weights_only=True))
    model.eval()
    return Target(key, tdir, model, tokenizer, preprocess, hit, train_s, n, cfg.train.epochs)


def _fit(cfg, model, tokenizer, preprocess, shards, uids, tdir, logger, world) -> float:
    t0 = time.time()
    L.seed_everything(cfg.seed, workers=True)
    model_init, _, _ = build_model(cfg.model)  # seeded init, independent of what was built before
    model.load_state_dict(model_init.state_dict())
    train_cfg = OmegaConf.to_container(cfg.train, resolve=True)
    module = CLIPTarget(model, train_cfg, len(uids))
    dm = PairDataModule(shards, uids, preprocess, tokenizer, cfg.train.batch_size,
                        cfg.train.num_workers, cfg.data.in_memory, cfg.seed, world.rank, world.size)
    ckpt_dir = tdir / "ckpt"
    last = ckpt_dir / "last.ckpt"
    if last.exists():
        log.info("resuming target training from %s", last)
    ddp = world.size > 1
    trainer = L.Trainer(
        max_epochs=cfg.train.epochs, accelerator=cfg.trainer.accelerator,
        devices=cfg.trainer.devices if ddp else ([world.device.index] if world.device.type == "cuda" else 1),
        num_nodes=cfg.trainer.num_nodes if ddp else 1, strategy=cfg.trainer.strategy if ddp else "auto",
        plugins=[world.cluster], use_distributed_sampler=False,  # MemberOrder already splits the ranks
        precision=precision(cfg.train, world.device),
        logger=logger if logger is not None and world.is_main else False, default_root_dir=str(tdir),
        # Epoch-end checkpoints only: a mid-epoch resume would replay part of an epoch and train some
        # members more often than others. One file, overwritten (Lightning writes it atomically).
        callbacks=[ModelCheckpoint(dirpath=str(ckpt_dir), filename="last", save_top_k=1, monitor=None,
                                   every_n_epochs=1, save_on_train_epoch_end=True, enable_version_counter=False)],
        enable_model_summary=False, enable_progress_bar=cfg.train.progress_bar and world.is_main,
        log_every_n_steps=10, num_sanity_val_steps=0)
    trainer.fit(module, datamodule=dm, ckpt_path=str(last) if last.exists() else None)
    if trainer.current_epoch < cfg.train.epochs:  # interrupted (e.g. Ctrl-C): keep the checkpoint, no DONE
        raise RuntimeError(f"training of {tdir} stopped at epoch {trainer.current_epoch}/{cfg.train.epochs}; "
                           "run again to resume from its last checkpoint")

    seen = module.seen.cpu()
    if not bool((seen == cfg.train.epochs).all()):
        raise RuntimeError(f"member coverage check failed: {int((seen == 0).sum())} members never seen, "
                           f"counts range {int(seen.min())}..{int(seen.max())}, expected {cfg.train.epochs} each")
    train_s = time.time() - t0
    if not world.is_main:
        return train_s
    torch.save(model.state_dict(), tdir / "model.pt.tmp")
    (tdir / "model.pt.tmp").replace(tdir / "model.pt")
    atomic_write_text(tdir / "trained_uids.txt", "\n".join(uids) + "\n")
    meta = {"config": OmegaConf.to_container(cfg, resolve=True), "seed": cfg.seed, "git": git_revision(),
            "size": len(uids), "epochs": cfg.train.epochs, "train_s": train_s, "world_size": world.size,
            "precision": precision(cfg.train, world.device), "device": str(world.device),
            "shards": [str(s) for s in shards], "samples_per_s": len(uids) * cfg.train.epochs / train_s}
    atomic_write_text(tdir / "target.json", json.dumps(meta, indent=1))
    atomic_write_text(tdir / "DONE", "")
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    return train_s
