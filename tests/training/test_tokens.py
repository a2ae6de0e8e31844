"""Training only the used token rows gives the weights of training the whole table, bit for bit."""

from pathlib import Path

import pytest
import torch
from torch import nn

from mia.data.datamodule import PairDataModule
from mia.pipeline import prepare
from mia.training import module, tokens
from mia.training.spec import target_key
from mia.training.stage import train_target
from tests.helpers.config import compose_config


def _state(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_compact_table_keeps_layout_and_round_trips():
    emb = nn.Embedding(50, 8)
    model = nn.Module()
    model.token_embedding = emb
    before = emb.weight.detach().clone()
    compact = tokens.install(model, torch.tensor([7, 3, 3, 0, 42]))
    assert compact.weight.shape == (4, 8)
    assert torch.equal(
        model.state_dict()["token_embedding.weight"], before
    )  # the full table, in open_clip's layout
    ids = torch.tensor([[0, 3, 42], [7, 7, 0]])
    assert torch.equal(model.token_embedding(ids), before[ids])
    # an id outside the used rows is refused, never read from a wrong row
    with pytest.raises(IndexError):
        model.token_embedding(torch.tensor([[5]]))
    compact.decay(0.5, 0.1)
    changed = before.clone()
    unused = torch.ones(50, dtype=torch.bool)
    unused[[0, 3, 7, 42]] = False
    changed[unused] *= 1 - 0.5 * 0.1
    assert torch.equal(model.state_dict()["token_embedding.weight"], changed)
    tokens.restore(model)
    assert model.token_embedding is emb and torch.equal(emb.weight.detach(), changed)


@pytest.mark.slow
def test_compact_training_is_bit_identical_to_the_full_table(tmp_path, monkeypatch):
    """A small target trained by the pipeline, with and without the compact table: every state_dict
    tensor equal (weight decay on, warm-up and cosine over several epochs)."""

    def trained(root, compact: bool):
        cfg = compose_config(
            "debug=small",
            "train.epochs=3",
            "data.size=200",
            f"paths.root_dir={root}",
            "logger=none",
        )
        members, _, splits, spec = prepare(cfg)
        installed = []
        with monkeypatch.context() as mp:
            if not compact:
                mp.setattr(PairDataModule, "token_ids", lambda self: None)
            mp.setattr(
                module, "install", lambda *a: installed.append(tokens.install(*a)) or installed[-1]
            )
            target = train_target(
                spec,
                members.shards,
                splits.members,
                Path(cfg.paths.cache_dir),
                target_key(spec, members.fingerprint, cfg.data.split, cfg.data.size),
                export=False,
            )
        assert len(installed) == compact and type(target.model.token_embedding) is nn.Embedding
        if compact:
            assert len(installed[0].weight) < len(target.model.token_embedding.weight) / 10
        return _state(target.model), spec

    full, spec = trained(tmp_path / "full", compact=False)
    compact, _ = trained(tmp_path / "compact", compact=True)
    assert spec.weight_decay > 0
    assert full.keys() == compact.keys()
    for name in full:
        assert torch.equal(full[name], compact[name]), name
