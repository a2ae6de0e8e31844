"""Train only the token rows the members use (docs/design.md §3.3).

The tiny model's token table is 49,408 rows x its width, over 90% of its parameters, while a
corpus's captions use a few thousand ids. A row no caption uses gets a zero gradient, so AdamW
leaves its moments at zero and only its decoupled weight decay moves it. `CompactTokens` takes the
table's place during training: it trains the used rows as a compact parameter and decays the others
by the factor AdamW applies, `p * (1 - lr * wd)`, once per optimiser step. That is the same
arithmetic as the full table's update, so the weights are bit for bit those of training the whole
table (tests/training/test_tokens.py), for a fraction of the optimiser's work. Its state_dict is the
full table, so checkpoints, model.pt and the exported open_clip folder keep open_clip's layout.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CompactTokens(nn.Module):
    """A drop-in for `nn.Embedding` that trains the rows `used` (sorted distinct ids) alone."""

    def __init__(self, embedding: nn.Embedding, used: torch.Tensor):
        super().__init__()
        self.__dict__["original"] = embedding  # kept out of the module tree; `restore` puts it back
        full = embedding.weight.detach()
        used = torch.unique(used.to(full.device))  # sorted, so ids keep their order
        self.weight = nn.Parameter(full[used].clone())
        rest = torch.ones(len(full), dtype=torch.bool, device=full.device)
        rest[used] = False
        self.register_buffer("rest_ids", rest.nonzero().squeeze(1), persistent=False)
        self.register_buffer("rest", full[self.rest_ids].clone(), persistent=False)
        self.register_buffer("used_ids", used, persistent=False)
        # An id outside `used` maps past the compact table, so looking it up fails loudly.
        index = torch.full((len(full),), len(used), dtype=torch.long, device=full.device)
        index[used] = torch.arange(len(used), device=full.device)
        self.register_buffer("index", index, persistent=False)

    def forward(self, tokens):
        return F.embedding(self.index[tokens], self.weight)

    def full(self) -> torch.Tensor:
        """The whole table: the trained rows and the decayed others, at their ids."""
        table = self.rest.new_empty((len(self.index), self.weight.shape[1]))
        table[self.used_ids] = self.weight.detach()
        table[self.rest_ids] = self.rest
        return table

    def decay(self, lr: float, weight_decay: float):
        """What one AdamW step does to a row whose gradient was always zero."""
        if weight_decay:
            self.rest.mul_(1 - lr * weight_decay)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        destination[prefix + "weight"] = self.full()

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        key = prefix + "weight"
        if key not in state_dict:
            missing_keys.append(key)
            return
        table = state_dict[key].to(self.rest.device)
        with torch.no_grad():
            self.weight.copy_(table[self.used_ids])
            self.rest.copy_(table[self.rest_ids])


def install(model, used: torch.Tensor) -> CompactTokens:
    """Put a CompactTokens in `model.token_embedding`'s place (call `restore` to undo)."""
    compact = CompactTokens(model.token_embedding, used)
    model.token_embedding = compact
    return compact


def restore(model):
    """The model's own `nn.Embedding` back, holding the full table (a no-op if none was
    installed)."""
    compact = model.token_embedding
    if isinstance(compact, CompactTokens):
        original = compact.original.to(compact.weight.device)
        with torch.no_grad():
            original.weight.copy_(compact.full())
        model.token_embedding = original


def decay_after_steps(optimizer, compact: CompactTokens):
    """Decay the unused rows after every step of `optimizer`, with the lr and weight decay of the
    compact table's parameter group (the scheduler moves the lr only after the step). The group is
    looked up by its place at each step: loading a checkpoint's optimiser state replaces the
    groups."""
    i = next(
        i
        for i, g in enumerate(optimizer.param_groups)
        if any(p is compact.weight for p in g["params"])
    )

    def decay(opt, *_):
        compact.decay(opt.param_groups[i]["lr"], opt.param_groups[i]["weight_decay"])

    return optimizer.register_step_post_hook(decay)
