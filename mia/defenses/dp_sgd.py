"""DP-SGD for the contrastive loss by per-batch clipping, after Huang et al. 2023 (Dp-CLIP), with
Poisson sampling so that Opacus' RDP accountant applies as it stands (docs/design.md §11.5).

One pair appears in every term of its batch's contrastive loss, so clipping per example bounds
nothing. Instead, each step:
1. samples a batch by Poisson sampling: every member independently with probability q = B / N;
2. splits it into `groups` fixed groups (a member's group is a hash of its uid, fixed before
   training, so adding or removing one pair changes only its own group's loss);
3. clips each group's gradient of its own (mean) contrastive loss to norm C = max_grad_norm;
4. sums the clipped group gradients, adds N(0, (noise_multiplier * 2C)^2) per coordinate, and
   divides by `groups`; AdamW steps on that (post-processing).
Adding or removing one pair moves one clipped group gradient from one vector of norm <= C to
another: the sum moves by at most 2C, the sensitivity the noise is scaled to. groups = 1 is
Dp-CLIP's per-batch clipping; more groups average the noise down at the price of fewer in-batch
negatives per loss.

The noise is drawn from a generator seeded by the training seed, so a target can be rebuilt
bit for bit; a deployment would draw it from a secure source.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math

import numpy as np
import torch
from open_clip import ClipLoss
from tqdm import tqdm

from mia.cache import atomic_write_text
from mia.data.pairs import load_pairs
from mia.defenses.base import Defense, check
from mia.validate import ConfigError, is_int, is_number

log = logging.getLogger(__name__)
PRIVACY_FILE = "privacy.json"  # the accountant's figures, in the target's cache folder


def epsilon(noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> float:
    """Opacus' RDP accountant for `steps` Poisson-subsampled Gaussian steps."""
    from opacus.accountants import RDPAccountant

    accountant = RDPAccountant()
    accountant.history = [(noise_multiplier, sample_rate, steps)]
    return float(accountant.get_epsilon(delta))


def group_of(uids, groups: int, seed: int) -> np.ndarray:
    """Each member's group: a hash of (seed, uid), so it depends on the pair alone, not on the
    others."""
    return np.array(
        [
            int.from_bytes(
                hashlib.blake2b(f"{seed}:{u}".encode(), digest_size=8).digest(), "little"
            )
            % groups
            for u in uids
        ]
    )


def steps_for(n: int, batch_size: int, epochs: int) -> int:
    """As many steps as the undefended target takes: T epochs of ceil(N / B) batches."""
    return epochs * math.ceil(n / batch_size)


def clipped_sum(model, params, loss_fn, images, tokens, sampled, group, groups: int, C: float):
    """The sum over groups of each group's contrastive-loss gradient clipped to norm C, before
    noise, and which groups were clipped. Adding or removing one sampled pair changes one term: by
    <= 2C."""
    total = [torch.zeros_like(p) for p in params]
    clipped = []
    for j in range(groups):
        idx = sampled[group[sampled] == j]
        if len(idx) == 0:  # an empty group contributes the zero vector
            continue
        out = model(images[idx], tokens[idx])
        loss = loss_fn(out["image_features"], out["text_features"], out["logit_scale"])
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        grads = [
            torch.zeros_like(p) if gr is None else gr for p, gr in zip(params, grads, strict=True)
        ]
        norm = float(torch.sqrt(sum((gr.double() ** 2).sum() for gr in grads)))
        scale = min(1.0, C / (norm + 1e-12))
        clipped.append(scale < 1.0)
        for t, gr in zip(total, grads, strict=True):
            t.add_(gr, alpha=scale)
    return total, clipped


class DPSGD(Defense):
    name = "dp_sgd"
    strength = ("noise_multiplier",)
    trains = True

    def __init__(self, noise_multiplier: float, max_grad_norm: float, delta: float, groups: int):
        check(
            "noise_multiplier",
            noise_multiplier,
            is_number(noise_multiplier) and noise_multiplier > 0,
            "a number > 0",
        )
        check(
            "max_grad_norm",
            max_grad_norm,
            is_number(max_grad_norm) and max_grad_norm > 0,
            "a number > 0",
        )
        check("delta", delta, is_number(delta) and 0 < delta < 1, "in (0, 1)")
        check("groups", groups, is_int(groups) and groups >= 1, "an integer >= 1")
        super().__init__(
            noise_multiplier=float(noise_multiplier),
            max_grad_norm=float(max_grad_norm),
            delta=float(delta),
            groups=groups,
        )

    def accounting(self, n: int, batch_size: int, epochs: int) -> dict:
        q, steps = batch_size / n, steps_for(n, batch_size, epochs)
        s = self.settings
        return {
            "accountant": "opacus.accountants.RDPAccountant",
            "sampling": "poisson",
            "sample_rate": q,
            "steps": steps,
            "noise_multiplier": s["noise_multiplier"],
            "delta": s["delta"],
            "sensitivity": 2 * s["max_grad_norm"],
            "clipping": "per group of the batch",
            "epsilon": epsilon(s["noise_multiplier"], q, steps, s["delta"]),
        }

    def record(self, target_dir=None) -> dict:
        out = super().record()
        path = None if target_dir is None else target_dir / PRIVACY_FILE
        out["privacy"] = (
            json.loads(path.read_text()) if path is not None and path.exists() else None
        )
        return out

    def fit(
        self, spec, model, preprocess, tokenizer, shards, uids, world, tdir, optim
    ) -> torch.Tensor:
        """Train `model` in place with the training stage's `optim` (optimizer, clamp_temperature);
        returns how often each member was sampled. Writes privacy.json."""
        if world.size > 1:
            raise ConfigError("defense", need="=dp_sgd trains in one process: use trainer=default")
        n, s = len(uids), self.settings
        if spec.batch_size > n:
            raise ConfigError(
                "train.batch_size",
                need=f"={spec.batch_size} exceeds data.size={n}: the sample rate "
                "B / N of defense=dp_sgd must be at most 1",
            )
        device = world.device
        images, tokens = load_pairs(shards, uids, preprocess, tokenizer, "load members")
        images, tokens = images.to(device), tokens.to(device)
        group = torch.as_tensor(group_of(uids, s["groups"], spec.seed), device=device)
        q, steps = spec.batch_size / n, steps_for(n, spec.batch_size, spec.epochs)
        model.to(device).train()
        params = [p for p in model.parameters() if p.requires_grad]
        opt, sched = optim.optimizer(model, spec, steps)
        loss_fn = ClipLoss()
        g = torch.Generator().manual_seed(spec.seed)
        seen = torch.zeros(n, dtype=torch.int32)
        C, noise_std = s["max_grad_norm"], s["noise_multiplier"] * 2 * s["max_grad_norm"]
        clipped_frac = []
        for _ in tqdm(
            range(steps),
            desc=f"dp_sgd (sigma={s['noise_multiplier']:g})",
            unit="step",
            disable=not spec.progress_bar,
        ):
            sampled = (torch.rand(n, generator=g) < q).nonzero().squeeze(1)
            seen[sampled] += 1
            grads, clipped = clipped_sum(
                model, params, loss_fn, images, tokens, sampled.to(device), group, s["groups"], C
            )
            clipped_frac.extend(clipped)
            for p, t in zip(params, grads, strict=True):
                noise = torch.randn(p.shape, generator=g).to(device)
                p.grad = (t + noise_std * noise) / s["groups"]
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            optim.clamp_temperature(model)
        model.cpu().eval()
        record = {
            **self.accounting(n, spec.batch_size, spec.epochs),
            "groups": s["groups"],
            "max_grad_norm": C,
            "mean_sampled_per_step": float(seen.sum()) / steps,
            "fraction_of_group_gradients_clipped": float(np.mean(clipped_frac))
            if clipped_frac
            else None,
        }
        atomic_write_text(tdir / PRIVACY_FILE, json.dumps(record, indent=1))
        log.info(
            "dp_sgd: epsilon %.3g at delta %g (sigma %g, q %.4f, %d steps)",
            record["epsilon"],
            s["delta"],
            s["noise_multiplier"],
            q,
            steps,
        )
        return seen
