"""MemberOrder: the members' training order per epoch and rank."""

import pytest
import torch
from torch.utils.data import DataLoader

from mia.data.order import MemberOrder
from mia.validate import ConfigError


def test_one_rank_trains_in_the_order_a_seeded_shuffling_dataloader_gives():
    loader = DataLoader(
        range(40), batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(3)
    )
    order = MemberOrder(40, 8, seed=3)
    for epoch in range(3):
        order.set_epoch(epoch)
        assert list(order) == torch.cat(list(loader)).tolist()


def test_a_resumed_run_replays_the_order_of_an_uninterrupted_one():
    straight = MemberOrder(30, 6, seed=1)
    seen = [straight.positions(e) for e in range(4)]
    assert torch.equal(MemberOrder(30, 6, seed=1).positions(3), seen[3])
    assert torch.equal(straight.positions(1), seen[1])  # going back re-draws from the seed
    assert not torch.equal(seen[0], seen[1])


def test_ranks_split_every_global_batch_and_cover_each_member_once():
    ranks = [MemberOrder(24, 8, seed=0, rank=r, world=4) for r in range(4)]
    got = [o.positions(2) for o in ranks]
    assert all(len(o) == len(p) == 6 for o, p in zip(ranks, got, strict=True))
    assert sorted(torch.cat(got).tolist()) == list(range(24))
    whole = MemberOrder(24, 8, seed=0).permutation(2)
    for batch in range(3):  # rank r takes places r, r+4 of each global batch of 8
        places = whole[batch * 8 : (batch + 1) * 8]
        assert {int(p[batch * 2]) for p in got} | {int(p[batch * 2 + 1]) for p in got} == set(
            places.tolist()
        )


@pytest.mark.parametrize("n, batch_size, key", [(24, 6, "train.batch_size"), (25, 8, "data.size")])
def test_sizes_the_ranks_cannot_share_equally_are_refused(n, batch_size, key):
    with pytest.raises(ConfigError, match=key):
        MemberOrder(n, batch_size, seed=0, world=4)
