"""The per-pair statistic every shadow and the target assign to every pair the auditor holds, for
the reference-model attacks (LiRA, RMIA). The shadows arrive trained, in AttackContext.references:
the training stage trains them (mia/training/shadows.py, train_references) before any attack runs;
here each is loaded in turn, one model held at a time.

Statistics (`statistic`), all per pair and computed alike for every shadow and the target:
- fisher (LiRA's default): atanh(cos) = 1/2 log((1 + cos) / (1 - cos)), the cosine's variance-
  stabilising (Fisher z) transform, i.e. the logit of (1 + cos) / 2: the CLIP analogue of the
  logit-scaled confidence LiRA uses for classifiers. Memorised pairs pile up just below a cosine
  ceiling; atanh spreads that pile out, so IN and OUT values are closer to Gaussian.
- cos: the raw cosine.
- logodds: the contrastive log-odds of the pair against a fixed bank (nonmember_known, the pair
  itself left out), with the model's own temperature tau,
      1/2 [(tau c_kk - logsumexp_b tau <i_k, t_b>) + (tau c_kk - logsumexp_b tau <i_b, t_k>)],
  i.e. logit of the probability the model gives the true partner among the bank. RMIA needs a
  probability, Pr(x | theta) = sigmoid(logodds), so it always uses this one. The bank adds noise
  of its own to the statistic.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import logsumexp

from mia.attacks.contrastive import logit_scale
from mia.cache import Layout, atomic, config_hash, get_or_build
from mia.data.splits import EVAL_SETS, NONMEMBER_KNOWN, SCORED
from mia.features import embed
from mia.training.shadows import ShadowSettings, check_num_shadows, pool_of, reference_key
from mia.validate import ConfigError, require

log = logging.getLogger(__name__)

STATISTICS = ("fisher", "cos", "logodds")


@dataclass
class References:
    uids: np.ndarray  # pool uids: EVAL_SETS concatenated, in ctx.features order
    offsets: dict  # set name -> slice of `uids`
    inside: np.ndarray  # [num_shadows, n] bool: shadow m trained on pair k
    shadow_stats: np.ndarray  # [num_shadows, n] statistic of every pair under every shadow
    target_stats: np.ndarray  # [n] the same statistic under the target
    keys: list
    dirs: list
    trained: int  # shadows the job trained (0 when all were in the cache)
    statistic: str
    sizes: list = (
        None  # pairs each shadow trained on (pool pairs IN + filler); None: inside's counts
    )
    size_setting: str = "pool"  # shadows.size, or "paths": the auditor's own reference models
    seeds: list | None = (
        None  # each shadow's training seed; None: reference models of shadows.paths
    )

    @property
    def shadow_sizes(self) -> list:
        return (
            [int(k) for k in self.inside.sum(1)]
            if self.sizes is None
            else [int(k) for k in self.sizes]
        )

    def rows(self, name: str) -> slice:
        return self.offsets[name]

    def eval_rows(self) -> np.ndarray:
        """Pool indices of member_eval then nonmember_eval."""
        return np.r_[tuple(self.rows(name) for name in SCORED)]

    def diagnostics(self) -> dict:
        ev = self.eval_rows()
        n_in = self.inside[:, ev].sum(0)
        return {
            "num_shadows": len(self.keys),
            "shadow_keys": list(self.keys),
            "shadow_dirs": [str(d) for d in self.dirs],
            "shadows_trained": int(self.trained),
            "shadow_size": self.shadow_sizes[0] if len(self.keys) else 0,
            "shadows_size": self.size_setting,
            "shadow_seeds": None if self.seeds is None else [int(s) for s in self.seeds],
            "shadow_filler": (self.shadow_sizes[0] - int(self.inside[0].sum()))
            if len(self.keys)
            else 0,
            "pool_size": int(self.n),
            "pool_in_shadows": int(self.inside.any(0).sum()),
            "statistic": self.statistic,
            "mean_in_per_eval_pair": float(n_in.mean()),
            "mean_out_per_eval_pair": float((len(self.keys) - n_in).mean()),
        }

    @property
    def n(self) -> int:
        return len(self.uids)


def masked_mean(stats, mask) -> np.ndarray:
    """Per-pair mean of stats[m, k] over the shadows m with mask[m, k] (IN or OUT); NaN for a pair
    no shadow has on that side (a pool pair left out of every shadow under shadows.size=target)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(mask, stats, 0).sum(0) / mask.sum(0)


def contrastive_logodds(image, text, tau, bank, exclude=None):
    """logit of the probability of the true partner among the bank pairs, averaged over both
    directions. image, text: [n, d] normalised; bank: indices into the rows; exclude: [n] bank
    column (or -1) that is the pair itself and must not be its own negative."""
    pos = tau * (image * text).sum(1)
    i2t = tau * image @ text[bank].T  # image k against the bank's captions
    t2i = tau * text @ image[bank].T  # caption k against the bank's images
    if exclude is not None:
        rows = np.flatnonzero(exclude >= 0)
        i2t[rows, exclude[rows]] = -np.inf
        t2i[rows, exclude[rows]] = -np.inf
    return pos - 0.5 * (logsumexp(i2t, axis=1) + logsumexp(t2i, axis=1))


def pair_statistic(image, text, tau, bank, exclude, statistic):
    if statistic == "cos":
        return (image * text).sum(1)
    if statistic == "fisher":
        return np.arctanh(np.clip((image * text).sum(1).astype(np.float64), -1 + 1e-6, 1 - 1e-6))
    if statistic == "logodds":
        return contrastive_logodds(
            image.astype(np.float64), text.astype(np.float64), tau, bank, exclude
        )
    raise ConfigError("statistic", statistic, f"choose one of {STATISTICS}")


def check_shadow_settings(num_shadows, statistic: str, shadows) -> ShadowSettings:
    """Refuse bad shadow settings when the attack is configured, before any model is trained.
    `shadows`: the shadows group, built by its `_target_` where the attack's config was, or its
    settings (a config written without the `_target_`)."""
    check_num_shadows(num_shadows)
    require(statistic in STATISTICS, "statistic", statistic, f"choose one of {STATISTICS}")
    if isinstance(shadows, ShadowSettings):
        return shadows
    require(
        isinstance(shadows, dict),
        "shadows",
        shadows,
        "must be a mapping of size, pool, seed, paths",
    )
    return ShadowSettings.parse(**{k: v for k, v in shadows.items() if k != "_target_"})


def _load_tensors(ctx):
    """Pool images and tokens, read and preprocessed once per call (only if some shadow needs
    them)."""
    parts = [ctx.tensors(name) for name in EVAL_SETS]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def shadow_embeddings(shadow, pool_key: str, tensors):
    """(image, text, tau) of every pool pair under `shadow`, cached in the shadow's folder.
    `tensors()` gives the pool's (images, tokens); it is called only when the cache misses."""
    path = Layout.features(shadow.dir, f"pool-{pool_key}")

    def build():
        image, text, _ = embed(shadow.model, *tensors(), desc=f"shadow {shadow.key} features")
        with atomic(path) as tmp:
            np.savez(tmp, image=image, text=text, tau=logit_scale(shadow.model))

    get_or_build(path, build)
    with np.load(path) as z:
        return z["image"], z["text"], float(z["tau"])


def references(
    ctx, num_shadows: int, statistic: str = "fisher", settings: ShadowSettings | None = None
) -> References:
    """The statistic of every pool pair under each shadow of ctx.references (trained by the training
    stage: mia.training.shadows.train_references), or under each reference model of shadows.paths,
    and under the target. `settings` None: shadows.size=pool. The attack checked num_shadows and
    statistic when it was built (check_shadow_settings)."""
    settings = settings or ShadowSettings("pool", None, 0)
    shadows = ctx.references.get(reference_key(num_shadows, settings))
    if shadows is None:
        raise ValueError(
            f"this attack needs {num_shadows} shadow models (shadows.size={settings.size}), and "
            "the job trained none for it: the training stage trains the attacks' reference models"
        )
    uids, offsets = pool_of(ctx.features)
    if len(np.unique(uids)) < len(uids):
        raise ValueError(
            "the reference pool holds a uid twice: the evaluation sets must be disjoint"
        )
    if not np.array_equal(shadows.uids, uids):
        raise ValueError("the shadows were drawn over another reference pool than this context's")
    bank = np.arange(len(uids))[offsets[NONMEMBER_KNOWN]]
    exclude = np.full(len(uids), -1)
    exclude[bank] = np.arange(len(bank))
    pool_key = config_hash(list(uids))

    loaded = {}

    def tensors():  # the pool's pairs, read and preprocessed at most once per call
        if "pool" not in loaded:
            loaded["pool"] = _load_tensors(ctx)
        return loaded["pool"]

    keys, dirs, trained, stats = [], [], shadows.trained, []
    for shadow in shadows:  # loaded one at a time, each as its statistics are taken
        keys.append(shadow.key), dirs.append(shadow.dir)
        image, text, tau = shadow_embeddings(shadow, pool_key, tensors)
        stats.append(pair_statistic(image, text, tau, bank, exclude, statistic))
    inside, sizes = shadows.inside, [len(mine) for mine in shadows.members]

    image = np.concatenate([ctx.features[name].image for name in EVAL_SETS])
    text = np.concatenate([ctx.features[name].text for name in EVAL_SETS])
    target = pair_statistic(image, text, logit_scale(ctx.target.model), bank, exclude, statistic)
    setting = "paths" if settings.paths else settings.size
    log.info(
        "reference models: %d shadows (%d trained by this job) of %d pairs each, %d of them from a "
        "pool of %d pairs (shadows.%s)",
        len(shadows),
        trained,
        sizes[0],
        int(inside[0].sum()),
        len(uids),
        "paths" if settings.paths else f"size={settings.size}",
    )
    return References(
        uids,
        offsets,
        inside,
        np.stack(stats),
        target,
        keys,
        dirs,
        trained,
        statistic,
        sizes=sizes,
        size_setting=setting,
        seeds=shadows.seeds,
    )
