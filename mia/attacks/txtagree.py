"""Text-only: agreement of the text embedding across caption perturbations (docs/design.md §4.13).

An auditor who holds only captions (a writer) queries the text tower alone. The text tower was
trained to place each member caption at its image; perturbing a memorised caption a little (a
dropped word, two neighbouring words swapped) should move its embedding less than a non-member's,
whose embedding the model never pinned down:

    s(y) = mean_{r != r'} cos(f_txt(P_r(y)), f_txt(P_r'(y)))       statistic: pairwise (default)
    s(y) = mean_r cos(f_txt(P_r(y)), f_txt(y))                       statistic: to_original

P_r drops each word with probability `word_dropout` (never all of them) and then swaps `swaps`
random pairs of neighbouring words. No image and no image tower are used. Every draw is seeded
from (seed, uid, repeat) (mia/attacks/augment.py, with the agreement statistic).
"""

from __future__ import annotations

import numpy as np
import torch

from mia.attacks.augment import STATISTICS, agreement, sample_seed
from mia.attacks.base import Attack, AttackContext, AttackResult
from mia.data.splits import MEMBER_EVAL, NONMEMBER_EVAL, SCORED
from mia.validate import is_int, is_number, require


def perturb(caption: str, rng: np.random.Generator, word_dropout: float, swaps: int) -> str:
    words = caption.split()
    kept = [w for w in words if rng.random() >= word_dropout]
    words = kept or words  # an empty caption says nothing about the pair
    for _ in range(swaps if len(words) > 1 else 0):
        i = int(rng.integers(len(words) - 1))
        words[i], words[i + 1] = words[i + 1], words[i]
    return " ".join(words)


class TextAgreement(Attack):
    name = "txtagree"
    per_pair = True  # each set is scored alone, every draw seeded by its pair

    def __init__(
        self, *, word_dropout: float, swaps: int, repeats: int, statistic: str, batch_size: int
    ):
        require(
            is_number(word_dropout) and 0 <= word_dropout < 1,
            "word_dropout",
            word_dropout,
            "a probability in [0, 1)",
        )
        require(is_int(swaps) and swaps >= 0, "swaps", swaps, "an integer >= 0")
        require(
            word_dropout > 0 or swaps > 0,
            "word_dropout",
            word_dropout,
            "with swaps: 0 the captions are never perturbed",
        )
        require(statistic in STATISTICS, "statistic", statistic, f"choose from {list(STATISTICS)}")
        require(
            is_int(repeats) and repeats >= (2 if statistic == "pairwise" else 1),
            "repeats",
            repeats,
            "an integer >= 1 (>= 2 for statistic: pairwise)",
        )
        self.word_dropout, self.swaps, self.repeats = word_dropout, swaps, repeats
        self.statistic, self.batch_size = statistic, batch_size

    def perturbed(self, ctx: AttackContext, set_name: str, r: int) -> list[str]:
        return [
            perturb(
                c,
                np.random.default_rng(sample_seed(ctx.seed, uid, self.name, r)),
                self.word_dropout,
                self.swaps,
            )
            for uid, c in zip(ctx.uids(set_name), ctx.captions(set_name), strict=True)
        ]

    @torch.no_grad()
    def _embed(self, ctx: AttackContext, captions: list[str]) -> np.ndarray:
        model = ctx.target.model
        device = next(model.parameters()).device
        out = [
            model.encode_text(
                ctx.target.tokenizer(captions[i : i + self.batch_size]).to(device), normalize=True
            )
            .float()
            .cpu()
            for i in range(0, len(captions), self.batch_size)
        ]
        return torch.cat(out).numpy().astype(np.float64)

    def score(self, ctx: AttackContext, set_name: str) -> np.ndarray:
        views = np.stack(
            [self._embed(ctx, self.perturbed(ctx, set_name, r)) for r in range(self.repeats)]
        )
        return agreement(views, ctx.features[set_name].text, self.statistic)

    def run(self, ctx: AttackContext) -> AttackResult:
        s = {name: self.score(ctx, name) for name in SCORED}
        return AttackResult(
            s[MEMBER_EVAL],
            s[NONMEMBER_EVAL],
            {
                "word_dropout": self.word_dropout,
                "swaps": self.swaps,
                "repeats": self.repeats,
                "statistic": self.statistic,
                "seed": int(ctx.seed),
                "mean_agreement": {
                    "member": float(s[MEMBER_EVAL].mean()),
                    "nonmember": float(s[NONMEMBER_EVAL].mean()),
                },
            },
        )
