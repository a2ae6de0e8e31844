"""Caption perturbation at training time: every time a pair is drawn, each caption token is dropped
with probability `word_dropout`, so the exact caption, and above all its unique name words, is seen
less often than the pair is trained on. (The embedded corpus has one caption per image; several
captions per image would need a corpus that has them.)"""

from __future__ import annotations

import torch

from mia.defenses.base import Defense, check
from mia.validate import is_number


def drop_tokens(tokens: torch.Tensor, p: float, generator) -> torch.Tensor:
    """Each token strictly between start-of-text (column 0) and end-of-text (the row's largest id,
    as open_clip's tokenizer has it) dropped with probability p; the rest close up, padded with
    0."""
    length = tokens.shape[1]
    col = torch.arange(length).expand_as(tokens)
    eot = tokens.argmax(1, keepdim=True).cpu()
    inner = (col > 0) & (col < eot)
    keep = ~(inner & (torch.rand(tokens.shape, generator=generator) < p)) & (tokens.cpu() != 0)
    # a stable sort of (dropped, position) moves the kept tokens to the front, in order
    order = torch.argsort((~keep).long() * length + col, dim=1).to(tokens.device)
    out = tokens.gather(1, order)
    out[(col >= keep.sum(1, keepdim=True)).to(tokens.device)] = 0
    return out


class AugmentText(Defense):
    name = "augment_text"
    strength = ("word_dropout",)
    trains = augments = True

    def __init__(self, word_dropout: float):
        check(
            "word_dropout",
            word_dropout,
            is_number(word_dropout) and 0 <= word_dropout < 1,
            "in [0, 1)",
        )
        super().__init__(word_dropout=word_dropout)

    def augment(self, images, tokens, generator):
        return images, drop_tokens(tokens, self.settings["word_dropout"], generator)
