"""Shard folders made from an existing corpus's pairs."""

import webdataset as wds

from mia.data.shards import raw_samples, sample_uid


def write_subset(shards, uids, folder, shard_size=150):
    """The samples of `uids`, copied from `shards` into a new shard folder (what an owner would
    hand over); returns how many were written."""
    wanted, n = set(uids), 0
    folder.mkdir(parents=True)
    sink = None
    for sample in raw_samples(shards):
        if sample_uid(sample) not in wanted:
            continue
        if n % shard_size == 0:
            sink and sink.close()
            sink = wds.TarWriter(str(folder / f"{n // shard_size:05d}.tar"))
        sink.write({k: v for k, v in sample.items() if not k.startswith("__") or k == "__key__"})
        n += 1
    sink.close()
    return n
