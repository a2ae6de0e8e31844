"""The order members are trained in: per epoch, per rank (docs/design.md §7.4, §7.6)."""

from __future__ import annotations

import torch
from torch.utils.data import Sampler

from mia.validate import ConfigError


class MemberOrder(Sampler):
    """The positions one rank trains on in an epoch. Each epoch's seeded permutation of the N
    members is cut into global batches of `batch_size`; rank r takes places r, r+W, ... of each. So
    across ranks every member is trained on exactly once per epoch, nothing is padded
    (docs/design.md §7.6), and every rank gets the same number of equal-sized batches (DDP hangs
    otherwise, §7.4).

    With one rank this is the order `DataLoader(shuffle=True, generator=manual_seed(seed))` gives,
    but as a function of the epoch: a resumed run replays the order of an uninterrupted one."""

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        if batch_size % world:
            raise ConfigError(
                "train.batch_size",
                need=f"={batch_size} (the global batch) must divide by the {world} ranks",
            )
        if n % world:
            raise ConfigError(
                "data.size",
                need=f"={n} must divide by the {world} ranks: with equal batches on every "
                "rank, anything else would drop or repeat members",
            )
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
            # the DataLoader's per-epoch base seed
            torch.empty((), dtype=torch.int64).random_(generator=g)
            perm, e = torch.randperm(self.n, generator=g), e + 1
            # RandomSampler draws (and drops) one more at the end
            torch.randperm(self.n, generator=g)
        self._cursor = (e, perm, g.get_state())
        return perm

    def positions(self, epoch: int) -> torch.Tensor:
        """This rank's member positions of `epoch`, in training order: places r, r+W, ... of every
        global batch. A global batch starts at a multiple of its size, hence of W, so these are the
        places r, r+W, ... of the whole permutation: one strided view, no per-member object."""
        return self.permutation(epoch)[self.rank :: self.world]

    def __iter__(self):
        positions = self.positions(self.epoch)
        for start in range(0, len(positions), 1 << 16):  # Python ints a chunk at a time, for any N
            yield from positions[start : start + (1 << 16)].tolist()

    def __len__(self):
        return self.n // self.world
