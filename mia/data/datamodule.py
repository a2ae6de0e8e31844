"""The Lightning data module of target training: the N member pairs, in memory or streamed, read
from the shards or, for members past the embedded corpus's shards, generated
(mia/data/generated.py)."""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import BatchSampler, DataLoader, TensorDataset
from tqdm import tqdm

from mia.data.generated import GeneratedPairs, Members
from mia.data.order import MemberOrder
from mia.data.pairs import PairStream, load_pairs


class PairDataModule(L.LightningDataModule):
    def __init__(
        self,
        shards,
        uids,
        preprocess,
        tokenizer,
        batch_size,
        num_workers,
        in_memory: bool,
        seed,
        rank=0,
        world=1,
    ):
        super().__init__()
        self.shards, self.uids, self.preprocess, self.tokenizer = (
            shards,
            uids,
            preprocess,
            tokenizer,
        )
        self.batch_size, self.num_workers, self.in_memory, self.seed = (
            batch_size,
            num_workers,
            in_memory,
            seed,
        )
        self.order = MemberOrder(len(uids), batch_size, seed, rank, world)
        self.generated = isinstance(uids, Members) and uids.extra > 0

    def setup(self, stage):
        device = self.trainer.strategy.root_device
        if self.generated:
            pairs = GeneratedPairs(self.uids, self.preprocess, self.tokenizer)
            self.dataset = (
                InMemoryPairs(*generate_all(pairs, self.num_workers)[:2], device)
                if self.in_memory
                else pairs
            )
        elif self.in_memory:
            images, tokens = load_pairs(
                self.shards, self.uids, self.preprocess, self.tokenizer, "load members"
            )
            self.dataset = InMemoryPairs(images, tokens, device)
        else:
            # Each rank streams exactly the members `order` deals it, in whole batches per loader
            # worker (docs/design.md §7.5).
            self.dataset = PairStream(
                self.shards, self.uids, self.preprocess, self.tokenizer, self.order
            )

    def token_ids(self):
        """Every token id the members' captions hold (with padding's 0), or None where they are
        streamed."""
        if not isinstance(getattr(self, "dataset", None), InMemoryPairs):
            return None
        return torch.cat(
            [
                torch.unique(self.dataset.tensors[1]),
                torch.zeros(1, dtype=torch.long, device=self.dataset.tensors[1].device),
            ]
        )

    def train_dataloader(self):
        local_batch = self.batch_size // self.order.world
        if self.in_memory:
            return self.dataset.loader(self.order, local_batch)
        if (
            self.generated
        ):  # workers generate whole batches of the positions `order` deals this rank
            return DataLoader(
                self.dataset,
                batch_sampler=BatchSampler(self.order, local_batch, drop_last=False),
                collate_fn=_whole_batch,
                num_workers=self.num_workers,
                persistent_workers=self.num_workers > 0,
                pin_memory=torch.cuda.is_available(),
            )
        return DataLoader(
            self.dataset,
            batch_size=local_batch,
            num_workers=self.num_workers,
            collate_fn=self.dataset.collate,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def on_after_batch_transfer(self, batch, dataloader_idx):
        # Streamed batches travel as uint8 (PairStream.collate) and are normalised here, on the
        # device; the precision's input conversion (bf16-true's cast, say), which left the uint8
        # images alone before the transfer, is then applied to the floats.
        if not isinstance(self.dataset, PairStream) or batch[0].dtype != torch.uint8:
            return batch
        return self.trainer.precision_plugin.convert_input(self.dataset.finish(batch))


def generate_all(pairs: GeneratedPairs, num_workers: int, batch: int = 256):
    """Every member of `pairs`, generated once by `num_workers` loader workers: (images, tokens,
    positions)."""
    n = len(pairs)
    loader = DataLoader(
        pairs,
        batch_sampler=BatchSampler(range(n), batch, drop_last=False),
        collate_fn=_whole_batch,
        num_workers=num_workers,
    )
    parts = list(tqdm(loader, total=len(loader), desc="generate members", unit="batch"))
    return tuple(torch.cat(column) for column in zip(*parts, strict=True))


class InMemoryPairs(TensorDataset):
    """Decoded training pairs, held on the training device: at the embedded corpus' 32 px a whole
    member set fits in GPU memory, and a batch is then one gather instead of a host-to-device
    copy."""

    def __init__(self, images, tokens, device="cpu"):
        super().__init__(
            images.to(device), tokens.to(device), torch.arange(len(images), device=device)
        )

    def __getitems__(self, positions):  # the whole batch at once (DataLoader's batched fetch)
        idx = torch.as_tensor(positions, device=self.tensors[0].device)
        return tuple(t.index_select(0, idx) for t in self.tensors)

    def loader(self, order, local_batch) -> DataLoader:
        return DataLoader(
            self,
            batch_sampler=BatchSampler(order, local_batch, drop_last=False),
            collate_fn=_whole_batch,
        )


def _whole_batch(batch):
    return batch
