"""Image-caption pairs for a given set of uids, as model-ready tensors.

`load_pairs` decodes them once into memory (the embedded corpus at 32 px is a few hundred MB at
most); `PairStream` streams them from the shards for corpora that do not fit.
"""
from __future__ import annotations

import json
import logging

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info
from tqdm import tqdm

from mia.data.shards import decode_image, image_bytes, raw_samples

log = logging.getLogger(__name__)


def _uid(sample) -> str:
    return str(json.loads(sample["json"]).get("uid")) if "json" in sample else sample["__key__"]


def _caption(sample) -> str:
    if "txt" in sample:
        return sample["txt"].decode("utf-8").strip()
    return json.loads(sample["json"])["caption"].strip()


def load_raw(shards, uids, desc="pairs"):
    """(PIL images, captions) in the order of `uids`; every uid must be readable (the index says so)."""
    position = {u: i for i, u in enumerate(uids)}
    images, captions = [None] * len(uids), [None] * len(uids)
    found = 0
    with tqdm(total=len(uids), desc=desc, unit="pair") as bar:
        for sample in raw_samples(shards):
            i = position.get(_uid(sample))
            if i is None or images[i] is not None:
                continue
            images[i] = decode_image(image_bytes(sample))
            captions[i] = _caption(sample)
            found += 1
            bar.update()
            if found == len(uids):
                break
    if found < len(uids):
        missing = [u for u, im in zip(uids, images) if im is None][:3]
        raise ValueError(f"{len(uids) - found} uids were not found in the shards (e.g. {missing}); "
                         "the shards changed since they were indexed?")
    return images, captions


def to_tensors(images, captions, preprocess, tokenizer):
    """PIL images and captions as a model's (images, tokens) tensors."""
    return torch.stack([preprocess(im) for im in images]), tokenizer(captions)


def load_pairs(shards, uids, preprocess, tokenizer, desc="pairs"):
    """(images, tokens) model-ready tensors in the order of `uids`."""
    return to_tensors(*load_raw(shards, uids, desc), preprocess, tokenizer)


class PairStream(IterableDataset):
    """Streams (image, tokens, position) for `uids` from the shards, each uid once per pass.

    One process: shards are split over DataLoader workers. Under DDP, `deal(epoch)` gives this
    rank's member positions of the epoch (mia.data.order.MemberOrder.positions); they are dealt to
    the rank's workers and every worker scans all shards, decoding only its own: the ranks then get
    exactly N / W members and equal batch counts, which splitting whole shards by node cannot
    promise without dropping or repeating members (docs/design.md §7.4-7.5). A sample that fails to
    decode is skipped and counted.
    """

    def __init__(self, shards, uids, preprocess, tokenizer, shuffle_buffer=1000, seed=0, rank=0, deal=None):
        self.shards, self.preprocess, self.tokenizer = list(shards), preprocess, tokenizer
        self.position = {u: i for i, u in enumerate(uids)}
        self.shuffle_buffer, self.seed, self.epoch, self.rank, self.deal = shuffle_buffer, seed, 0, rank, deal
        self.skipped = 0

    def __len__(self):
        return len(self.position)

    def __iter__(self):
        worker = get_worker_info()
        wid, nworkers = (worker.id, worker.num_workers) if worker else (0, 1)
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, wid])
        shards, mine = self.shards[wid::nworkers], None
        if self.deal is not None:
            shards, mine = self.shards, set(self.deal(self.epoch)[wid::nworkers])
        self.epoch += 1
        buffer = []
        for sample in raw_samples(shards):
            i = self.position.get(_uid(sample))
            if i is None or (mine is not None and i not in mine):
                continue
            try:
                image = self.preprocess(decode_image(image_bytes(sample)))
            except Exception as err:
                self.skipped += 1
                log.warning("skipping unreadable sample %s: %s", sample.get("__key__"), err)
                continue
            buffer.append((image, self.tokenizer([_caption(sample)])[0], i))
            if len(buffer) >= self.shuffle_buffer:
                yield buffer.pop(rng.integers(len(buffer)))
        rng.shuffle(buffer)
        yield from buffer
