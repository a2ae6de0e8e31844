"""Image-caption pairs for a given set of uids, as model-ready tensors.

`load_pairs` decodes them once into memory (the embedded corpus at 32 px is a few hundred MB at
most); `PairStream` streams them from the shards for corpora that do not fit. Both find a sample's
uid with the index's own rule (mia.data.shards.sample_uid) and ignore samples the index does not
hold, so the three always agree on which pairs exist.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info
from tqdm import tqdm

from mia.data.shards import decode_image, image_bytes, raw_samples, read_meta, sample_uid
from mia.data.tensors import TensorPreprocess

log = logging.getLogger(__name__)


def _position(sample, position: dict):
    """Where the sample's uid sits in `position`, or None: not asked for, or not indexed (a sample
    cut off by a truncated shard, an unreadable JSON)."""
    return None if "__cut__" in sample else position.get(sample_uid(sample))


def _decode(sample, decode=decode_image):
    """The sample's image (`decode` of its bytes); it was indexed, so it decoded then."""
    try:
        return decode(image_bytes(sample))
    except Exception as err:
        shard = Path(sample["__url__"])
        raise RuntimeError(
            f"{sample['__key__']} in {shard} was readable when the shards were indexed but is "
            f"not now ({type(err).__name__}: {err}): the shard changed under the same name, size "
            "and mtime. Touch it to have the folder indexed again"
        ) from err


def load_raw(shards, uids, desc="pairs"):
    """(PIL images, captions) in the order of `uids`; every uid must be readable (the index says
    so). A uid listed several times (a duplicated canary, mia/data/canaries.py) is read once and
    repeated."""
    unique = list(dict.fromkeys(uids))
    if len(unique) < len(uids):
        images, captions = load_raw(shards, unique, desc)
        at = {u: i for i, u in enumerate(unique)}
        return [images[at[u]] for u in uids], [captions[at[u]] for u in uids]
    position = {u: i for i, u in enumerate(uids)}
    images, captions = [None] * len(uids), [None] * len(uids)
    found = 0
    with tqdm(total=len(uids), desc=desc, unit="pair") as bar:
        for sample in raw_samples(shards, errors=[]):  # the index has reported broken shards
            i = _position(sample, position)
            if i is None or images[i] is not None:
                continue
            images[i] = _decode(sample)
            captions[i] = read_meta(sample)["caption"]
            found += 1
            bar.update()
            if found == len(uids):
                break
    if found < len(uids):
        missing = [u for u, im in zip(uids, images, strict=True) if im is None][:3]
        raise ValueError(
            f"{len(uids) - found} uids were not found in the shards (e.g. {missing}); "
            "the shards changed since they were indexed?"
        )
    return images, captions


def to_tensors(images, captions, preprocess, tokenizer):
    """PIL images and captions as a model's (images, tokens) tensors."""
    return torch.stack([preprocess(im) for im in images]), tokenizer(captions)


def load_pairs(shards, uids, preprocess, tokenizer, desc="pairs"):
    """(images, tokens) model-ready tensors in the order of `uids`."""
    return to_tensors(*load_raw(shards, uids, desc), preprocess, tokenizer)


class PairStream(IterableDataset):
    """Streams (image, caption, position) of this rank's members from the shards, each once per
    epoch; `collate` makes a batch of them (images, tokens, positions), tokenising the captions
    together.

    `order` (mia.data.order.MemberOrder) gives the rank's member positions of each epoch
    (docs/design.md §7.4). They are cut into local batches, and the local batches are dealt to the
    DataLoader workers: worker w takes batches w, w + workers, ... . Every worker scans the shards,
    decodes only its own members and mixes them through a seeded shuffle buffer. Each worker thus
    holds whole batches but for the rank's last one, and the loader yields exactly the len(loader)
    batches Lightning counts on (§7.5).

    Nothing is skipped here: every member was indexed, and the index decodes exactly as this stream
    does. A member that fails to decode anyway (its shard changed in place) stops training with an
    error naming it, rather than leaving a member untrained for the coverage check to find at the
    end.
    """

    def __init__(self, shards, uids, preprocess, tokenizer, order, shuffle_buffer=1000):
        if len(uids) != order.n:
            raise ValueError(f"{len(uids)} uids but an order over {order.n} members")
        self.shards, self.tokenizer, self.order = list(shards), tokenizer, order
        self.preprocess = TensorPreprocess(preprocess)
        # uid -> member position by binary search in arrays: no per-member Python object for any N
        uids = np.asarray(uids, dtype=str)
        self.by_uid = np.argsort(uids, kind="stable")
        self.sorted_uids = uids[self.by_uid]
        self.local_batch = order.batch_size // order.world
        self.shuffle_buffer, self.epoch = shuffle_buffer, 0

    def __len__(self):  # this rank's share: len(loader) is then this rank's batch count
        return len(self.order)

    def collate(self, batch):
        """A batch of (image, caption, position) as tensors, its captions tokenised in one call. The
        images stay uint8 where the whole batch took the tensor path: `finish` makes them
        model-ready where they arrive (on the training device,
        PairDataModule.on_after_batch_transfer)."""
        images, captions, positions = zip(*batch, strict=True)
        return (
            self.preprocess.stack_raw(images),
            self.tokenizer(list(captions)),
            torch.as_tensor(positions),
        )

    def finish(self, batch):
        """A collated batch with model-ready float images, bit for bit those of normalising in the
        worker (TensorPreprocess.finish: the same operations in the same order)."""
        images, tokens, positions = batch
        if images.dtype == torch.uint8:
            images = self.preprocess.finish(images)
        return images, tokens, positions

    def mine(self, epoch: int, worker: int, workers: int) -> np.ndarray:
        """Which member positions worker `worker` of `workers` streams in `epoch` (a mask over the
        members): its whole local batches, batches worker, worker + workers, ..."""
        positions = self.order.positions(epoch).numpy()
        take = (np.arange(len(positions)) // self.local_batch) % workers == worker
        mask = np.zeros(self.order.n, bool)
        mask[positions[take]] = True
        return mask

    def position(self, sample) -> int | None:
        """The sample's member position, or None (not a member, or not indexed)."""
        if "__cut__" in sample:
            return None
        uid = sample_uid(sample)
        at = np.searchsorted(self.sorted_uids, uid) if uid is not None else len(self.sorted_uids)
        return (
            int(self.by_uid[at])
            if at < len(self.sorted_uids) and self.sorted_uids[at] == uid
            else None
        )

    def __iter__(self):
        worker = get_worker_info()
        wid, nworkers = (worker.id, worker.num_workers) if worker else (0, 1)
        rng = np.random.default_rng([self.order.seed, self.epoch, self.order.rank, wid])
        mine = self.mine(self.epoch, wid, nworkers)
        self.epoch += 1
        buffer, left = [], int(mine.sum())
        for sample in raw_samples(self.shards, errors=[]):  # the index has reported broken shards
            if not left:
                break
            i = self.position(sample)
            if i is None or not mine[i]:
                continue
            mine[i] = False
            left -= 1
            buffer.append(
                (_decode(sample, self.preprocess.decode), read_meta(sample)["caption"], i)
            )
            if len(buffer) >= self.shuffle_buffer:
                yield buffer.pop(rng.integers(len(buffer)))
        rng.shuffle(buffer)
        yield from buffer
