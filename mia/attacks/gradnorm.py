"""Loss / gradient-norm attack, Gomez's white-box variant (docs/design.md §4).

For each pair, two features from the target's L2-normalised embeddings:

    l_k = (CE(row k) + CE(column k)) / 2         symmetric InfoNCE, logits exp(logit_scale)
                                                 img @ txt.T
    g_k = || d(sum_j l_j) / d(img_k, txt_k) ||   the group loss's gradient w.r.t. the pair's
                                                 embeddings

Members are fitted better: lower loss and, the softmax being saturated, a smaller gradient. The
features are log l and log g, in float64 from the margins (mia/attacks/contrastive.py), so that
tiny losses stay distinct instead of rounding to one tied 0 (the original takes l and g in
float32). They are z-scored against D_no (known non-members); the D_all pairs with
-z_l/2 - z_g/2 > 0 are pseudo-members; a logistic regression (D_no = 0, pseudo-members = 1) on
them gives the score. It is fitted on the z-scored features (the original fits raw ones: same
model up to the L2 penalty, better conditioned).

Three ways to choose the negatives each pair is contrasted with (`negatives`):
- mixed (default): the scored pairs are cut into batches of `batch_size` from ONE seeded shuffle
  of their union (AttackContext.scored_order), so a pair's batch-mates are members and
  non-members alike, drawn without looking at which set it sits in: its score does not depend on
  its label (the label-blind invariant, docs/design.md §4). D_no and D_all are featurised the same
  way, each as a seeded shuffle cut into batches (D_all mixes members and non-members, as the
  scored batches do, so the regression is fitted on features of the kind it scores).
- pure: the published script (lluisgomez/CLIP-MIA-Bench), kept to reproduce it. Batches of ONE
  evaluation set: members only meet members, non-members only non-members. A pair's loss then
  depends on its label through its batch-mates (member batch-mates are fitted too, so they
  sharpen its softmax): a leak no auditor could exploit, which inflates the AUC (docs/design.md §4).
  `batch`, this mode's old name, is refused.
- fixed: every pair against the same bank of `bank_size` known non-members: its image vs [its
  text, bank texts] and its text vs [its image, bank images]. The bank is drawn from D_no with the
  seed and left out of the D_no used for z-scoring and training (a bank pair would meet itself).
  Each pair's loss depends on that pair alone.
In mixed and pure, the batch loss is the sum of the per-sample losses, as in the original code, and
a set is cut into near-equal batches (never one short tail batch whose smaller softmax would shift
its losses).

D_no's own scores, which the thresholds calibrated on D_no are set from (`score_known`,
docs/design.md §5), are featurised as an evaluation pair is: under mixed, each D_no pair takes the
place of one scored pair, drawn with the seed, in that pair's label-blind batch, so its batch-mates
are members and non-members as an evaluation pair's are (a batch of non-members alone would give
it other losses); under pure, D_no is cut into batches of its own, as each evaluation set is; under
fixed, the D_no pairs outside the bank meet the bank.

The embeddings come from the feature store: no tower is re-run, the loss and gradient are a few
matrix products (torch autograd): mia/attacks/contrastive.py, shared with `paramgrad`.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from mia.attacks.base import Attack, AttackContext, AttackResult
from mia.attacks.contrastive import log_loss_and_grad_norm, logit_scale, split_known
from mia.attacks.weak_supervision import feature_means, pseudo_label_scores
from mia.data.splits import AUX_POOL, MEMBER_EVAL, NONMEMBER_EVAL, NONMEMBER_KNOWN, SCORED
from mia.validate import is_int, is_number, require

NEGATIVES = ("mixed", "pure", "fixed")


class GradNorm(Attack):
    name = "gradnorm"
    reads_known_nonmembers = True  # z-scores its statistics on D_no

    def __init__(self, *, negatives: str, batch_size: int, bank_size: int, C: float):
        require(
            negatives != "batch",
            "negatives",
            negatives,
            "renamed 'pure' (batches of one evaluation set, the published script, which leaks the "
            "labels); the label-blind default is 'mixed'",
        )
        require(negatives in NEGATIVES, "negatives", negatives, f"choose from {list(NEGATIVES)}")
        require(
            is_int(batch_size) and batch_size >= 2,
            "batch_size",
            batch_size,
            "an integer >= 2 (a pair needs negatives)",
        )
        require(is_int(bank_size) and bank_size >= 1, "bank_size", bank_size, "an integer >= 1")
        require(is_number(C) and C > 0, "C", C, "a number > 0")
        self.negatives, self.batch_size, self.bank_size, self.C = (
            negatives,
            batch_size,
            bank_size,
            C,
        )

    def _features(self, img, txt, scale, seed, bank, order=None):
        """[n, 2] (log loss, log grad norm), float64, of one set of pairs, in the set's order;
        batches are cut from `order` (positions in the set), by default a shuffle seeded by
        `seed`."""
        img, txt = (
            torch.as_tensor(img, dtype=torch.float32),
            torch.as_tensor(txt, dtype=torch.float32),
        )
        if bank is not None:  # each pair's loss is independent of the others: one group
            return torch.stack(log_loss_and_grad_norm(img, txt, scale, bank), 1).numpy()
        out = np.empty((len(img), 2), dtype=np.float64)
        if order is None:
            order = np.random.default_rng(seed).permutation(len(img))
        for idx in np.array_split(order, math.ceil(len(img) / self.batch_size)):
            out[idx] = torch.stack(log_loss_and_grad_norm(img[idx], txt[idx], scale), 1).numpy()
        return out

    def _all_features(self, ctx: AttackContext) -> tuple[dict, float]:
        """({set: [n, 2] (loss, grad norm)} of D_no (less the bank under fixed), aux_pool and the
        two evaluation sets, the logit scale)."""
        scale = logit_scale(ctx.target.model)
        known = ctx.features[NONMEMBER_KNOWN]
        keep, bank = np.arange(len(known.uids)), None
        if self.negatives == "fixed":
            bank_idx, keep = split_known(len(known.uids), self.bank_size, ctx.seed)
            bank = (torch.as_tensor(known.image[bank_idx]), torch.as_tensor(known.text[bank_idx]))
        # pure featurises each evaluation set alone (seeds 2, 3), mixed their union (seed 4)
        sets = {NONMEMBER_KNOWN: keep, AUX_POOL: None}
        if self.negatives != "mixed":
            sets.update({MEMBER_EVAL: None, NONMEMBER_EVAL: None})
        feats = {}
        for i, (name, rows) in enumerate(sets.items()):
            f = ctx.features[name]
            img, txt = (f.image, f.text) if rows is None else (f.image[rows], f.text[rows])
            feats[name] = self._features(img, txt, scale, [ctx.seed, i], bank)
        if self.negatives == "mixed":
            img, txt = (
                np.concatenate([ctx.features[s].image for s in SCORED]),
                np.concatenate([ctx.features[s].text for s in SCORED]),
            )
            feats[MEMBER_EVAL], feats[NONMEMBER_EVAL] = ctx.split_scored(
                self._features(img, txt, scale, None, None, order=ctx.scored_order(4))
            )
        return feats, scale

    def _known_as_scored(self, ctx: AttackContext, scale: float) -> np.ndarray:
        """[n_known, 2] features of D_no under mixed, each pair in a scored pair's place in that
        pair's batch of the evaluation (scored_order(4), cut as _features cuts it); the place is
        drawn with (seed, 5), uniformly over the scored pairs."""
        img, txt = (
            torch.as_tensor(np.concatenate([ctx.features[s].image for s in SCORED])),
            torch.as_tensor(np.concatenate([ctx.features[s].text for s in SCORED])),
        )
        known = ctx.features[NONMEMBER_KNOWN]
        order = ctx.scored_order(4)
        batches = np.array_split(order, math.ceil(len(order) / self.batch_size))
        starts = np.cumsum([0] + [len(b) for b in batches])
        places = np.random.default_rng([ctx.seed, 5]).integers(len(order), size=len(known.uids))
        out = np.empty((len(known.uids), 2), dtype=np.float64)
        for j, place in enumerate(places):
            c = int(np.searchsorted(starts, place, side="right")) - 1
            slot = place - starts[c]
            bi, bt = img[batches[c]].clone(), txt[batches[c]].clone()
            bi[slot], bt[slot] = torch.as_tensor(known.image[j]), torch.as_tensor(known.text[j])
            loss, norm = log_loss_and_grad_norm(bi, bt, scale)
            out[j] = loss[slot].item(), norm[slot].item()
        return out

    def score_known(self, ctx: AttackContext) -> np.ndarray:
        """D_no's scores, each pair featurised as an evaluation pair is (module docstring), through
        the regression the evaluation pairs are scored with; under fixed, those of the pairs outside
        the bank."""
        with self._keyed():
            feats, scale = self._all_features(ctx)
            known = (
                self._known_as_scored(ctx, scale)
                if self.negatives == "mixed"
                else feats[NONMEMBER_KNOWN]
            )
            (scores,), _ = self._scores(ctx, feats, [known])
        return scores

    def _scores(self, ctx: AttackContext, feats: dict, evals: list) -> tuple[list, dict]:
        """pseudo_label_scores: fitted on D_no and aux_pool, applied to each array of `evals`."""
        return pseudo_label_scores(
            feats[NONMEMBER_KNOWN],
            feats[AUX_POOL],
            evals,
            ctx.splits.aux_is_member,
            C=self.C,
        )

    def run(self, ctx: AttackContext) -> AttackResult:
        feats, scale = self._all_features(ctx)
        (mem, non), diag = self._scores(ctx, feats, [feats[MEMBER_EVAL], feats[NONMEMBER_EVAL]])
        diagnostics = {
            "negatives": self.negatives,
            "logit_scale": scale,
            **diag,
            "raw_means": feature_means(feats),
        }
        if self.negatives != "fixed":
            diagnostics["batch_size"] = self.batch_size
        else:
            diagnostics["bank_size"] = self.bank_size
        return AttackResult(mem, non, diagnostics)
