"""Shadow CLIPs for the reference-model attacks (LiRA, RMIA): which pairs each one trains on, and
the per-pair statistic every shadow and the target assign to every pair the auditor holds.

Reference pool: member_eval + nonmember_eval + nonmember_known + aux_pool, i.e. every pair the
auditor holds. The evaluation pairs are in it because online LiRA needs IN and OUT shadows for
each of them; nonmember_known is in it so that RMIA's population samples z are, like the
evaluated pairs, IN for half of the shadows (online) or looked up in their OUT shadows (offline).

Halves come in complementary pairs: shadow 2j trains on a seeded random half H_j of the pool,
shadow 2j+1 on the rest. Every pool pair is therefore IN for exactly num_shadows / 2 shadows and
OUT for the others (balanced, as in Carlini et al.'s code), and shadow i depends only on
(seed, i // 2, pool), so raising num_shadows reuses the shadows already trained, and lira and
rmia (and reruns) share them through the cached training stage.

Scale (`shadows.size`, one setting for lira and rmia, conf/shadows/default.yaml):
- target (default): every shadow trains on N pairs, the target's N, at its T and recipe. Where the
  half of the pool is smaller than N, it is topped up with filler: seeded pairs from the auditor's
  own i.i.d. pairs beyond the pool (the held-out pairs past every split, Splits.past, or the shard
  folder `shadows.pool`), disjoint from every evaluation set, never IN for any shadow and never
  scored. Members generated past the embedded corpus's shards are never filler: they are members'
  siblings. Where the half is larger than N (2N < pool), the halves split only 2N pool pairs: the
  scored pairs first (member_eval, nonmember_eval), then nonmember_known, then aux_pool, the last
  tier that fits in part drawn with the seed; the pairs left out are OUT of every shadow. Shadows
  are seeded by `shadows.seed`, not the job's seed, and their cache key holds neither the target's
  key nor its seed, so the seeds of a sweep (and jobs with or without canaries) share them.
  A pool too small for N is refused right after the splits, before any model trains
  (`check_scale`), naming attack.<name>.shadows.size, the need and what would fit.
- pool: today's shadows exactly (halves of the pool, seeded by the job's seed, keyed by the target).

Statistics (`statistic`), all per pair and computed alike for every shadow and the target:
- fisher (LiRA's default): atanh(cos) = 1/2 log((1 + cos) / (1 - cos)), the cosine's variance-
  stabilising (Fisher z) transform, i.e. the logit of (1 + cos) / 2: the CLIP analogue of the
  logit-scaled confidence LiRA uses for classifiers. Memorised pairs pile up just below a cosine
  ceiling; atanh spreads that pile out, so IN and OUT values are closer to Gaussian. On the planted
  test fixture it beat the raw cosine and the log-odds below (online 0.946 vs 0.937 / 0.881 AUC,
  offline 0.893 vs 0.835 / 0.833, 8 shadows of shadows.size=pool).
- cos: the raw cosine.
- logodds: the contrastive log-odds of the pair against a fixed bank (nonmember_known, the pair
  itself left out), with the model's own temperature tau,
      1/2 [(tau c_kk - logsumexp_b tau <i_k, t_b>) + (tau c_kk - logsumexp_b tau <i_b, t_k>)],
  i.e. logit of the probability the model gives the true partner among the bank. RMIA needs a
  probability, Pr(x | theta) = sigmoid(logodds), so it always uses this one. (The bank's noise
  makes it a worse LiRA statistic than fisher on the fixture.)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from scipy.special import logsumexp

from mia.attacks.contrastive import logit_scale
from mia.cache import Layout, atomic, config_hash, get_or_build
from mia.data import shards as sh
from mia.data.corpus import indexed
from mia.data.generated import Members
from mia.data.splits import AUX_POOL, EVAL_SETS, NONMEMBER_KNOWN, SCORED
from mia.features import embed
from mia.training.stage import train_target
from mia.validate import ConfigError, is_int, require

log = logging.getLogger(__name__)

STATISTICS = ("fisher", "cos", "logodds")
SIZES = ("target", "pool")


@dataclass(frozen=True)
class ShadowSettings:
    """The `shadows` node of lira and rmia (conf/shadows/default.yaml, interpolated into both)."""

    size: str  # target: N pairs each, the target's N; pool: halves of the reference pool only
    pool: (
        str | None
    )  # shard folder of the auditor's own i.i.d. pairs for filler; None: the held-out pairs
    seed: int  # halves and filler under size=target (the job's seed under size=pool)

    @classmethod
    def parse(cls, node) -> ShadowSettings:
        require(isinstance(node, dict), "shadows", node, "must be a mapping of size, pool and seed")
        unknown = sorted(set(node) - {"size", "pool", "seed"})
        if unknown:
            raise ConfigError(
                f"shadows.{unknown[0]}", need="is not a setting of shadows (size, pool, seed)"
            )
        for key in ("size", "pool", "seed"):
            if key not in node:
                raise ConfigError(
                    f"shadows.{key}", need="is missing (conf/shadows/default.yaml holds it)"
                )
        size, folder, seed = node["size"], node["pool"], node["seed"]
        require(
            size in SIZES,
            "shadows.size",
            size,
            "choose 'target' (each shadow trains on the target's N "
            "pairs) or 'pool' (on half of the reference pool)",
        )
        require(
            folder is None or (isinstance(folder, str) and folder),
            "shadows.pool",
            folder,
            "a shard folder of the auditor's own pairs, or null (the held-out pairs past the splits)",
        )
        require(is_int(seed) and seed >= 0, "shadows.seed", seed, "an integer >= 0")
        return cls(size, folder, int(seed))


@dataclass
class Filler:
    """The auditor's own i.i.d. pairs beyond the reference pool that shadows may fill up with."""

    uids: np.ndarray  # sorted
    shards: list  # where they are read from, beside the job's shards
    where: str  # for messages: "the held-out pool past the splits" or "shadows.pool=<folder>"


class ShadowTrainer:
    """Reference models trained like the target (same TrainSpec, same shards, other uids) through
    the same cached training stage, so a rerun, or lira and rmia in one job, train nothing twice.
    `past`: the i.i.d. pairs past every split (filler unless shadows.pool names a folder); `taken`:
    every uid a split or canary uses, which no filler may be."""

    def __init__(self, spec, shards, cache_dir, target_key: str, past=(), taken=()):
        self.spec, self.shards, self.cache_dir, self.target_key = (
            spec,
            list(shards),
            cache_dir,
            target_key,
        )
        self.past, self.taken = np.asarray(past, dtype=str), np.asarray(taken, dtype=str)
        self._fillers = {}

    def train(self, uids, tag: str):
        """A shadow of shadows.size=pool: keyed by the target's key (the job's seed and N included)."""
        key = config_hash(
            {"target": self.target_key, "shadow": tag, "uids": config_hash(sorted(uids))}
        )
        return train_target(self.spec, self.shards, list(uids), self.cache_dir, key, export=False)

    def train_scaled(self, uids, tag: str, seed: int, filler: Filler):
        """A shadow of shadows.size=target: trained with `seed`, keyed by what defines its weights (the
        target's recipe, the shards, the uids), not by the target, so the seeds of a sweep share it."""
        spec = replace(self.spec, seed=seed)
        shards = self.shards + [s for s in filler.shards if s not in self.shards]
        key = config_hash(
            {
                "shadow": tag,
                "weights": spec.weights_key(),
                "uids": config_hash(sorted(uids)),
                "shards": config_hash(sh.shard_fingerprint(shards)),
            }
        )
        return train_target(spec, shards, list(uids), self.cache_dir, key, export=False)

    def filler(self, folder: str | None) -> Filler:
        """The filler pairs: the held-out pairs past every split, or those of the folder `shadows.pool`
        (indexed once, cached), less any uid a split or canary uses."""
        if folder not in self._fillers:
            if folder is None:
                uids, shards, where = self.past, [], "the held-out pool past the splits"
            else:
                corpus = indexed(
                    f"shadows-{Path(folder).name}",
                    sh.list_shards(folder, "shadows.pool"),
                    Path(self.cache_dir),
                )
                uids, shards, where = (
                    corpus.index.uids,
                    corpus.shards,
                    f"the folder shadows.pool={folder}",
                )
            self._fillers[folder] = Filler(
                np.sort(np.setdiff1d(uids, self.taken)), list(shards), where
            )
        return self._fillers[folder]


@dataclass
class References:
    uids: np.ndarray  # pool uids: EVAL_SETS concatenated, in ctx.features order
    offsets: dict  # set name -> slice of `uids`
    inside: np.ndarray  # [num_shadows, n] bool: shadow m trained on pair k
    shadow_stats: np.ndarray  # [num_shadows, n] statistic of every pair under every shadow
    target_stats: np.ndarray  # [n] the same statistic under the target
    keys: list
    dirs: list
    trained: int  # shadows trained by this call (0 when all were cached)
    statistic: str
    sizes: list = (
        None  # pairs each shadow trained on (pool pairs IN + filler); None: inside's counts
    )
    size_setting: str = "pool"  # shadows.size

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


def pool(ctx):
    """(uids, {set name: slice}) of the reference pool, in ctx.features order."""
    offsets, start = {}, 0
    for name in EVAL_SETS:
        offsets[name] = slice(start, start + len(ctx.features[name].uids))
        start = offsets[name].stop
    return np.concatenate([ctx.features[name].uids for name in EVAL_SETS]), offsets


def halves(uids: np.ndarray, num_shadows: int, seed: int) -> np.ndarray:
    """[num_shadows, n] membership: shadows 2j and 2j+1 split the pool in two complementary halves."""
    check_num_shadows(num_shadows)
    order = np.argsort(uids)  # halves depend on the pool's content, not on the order sets come in
    inside = np.zeros((num_shadows, len(uids)), dtype=bool)
    for j in range(num_shadows // 2):
        first = np.random.default_rng([seed, j]).permutation(len(uids))[: len(uids) // 2]
        inside[2 * j, order[first]] = True
        inside[2 * j + 1] = ~inside[2 * j]
    return inside


def scaled_halves(
    uids: np.ndarray, offsets: dict, num_shadows: int, seed: int, size: int
) -> np.ndarray:
    """[num_shadows, n] membership of shadows that train on `size` pool pairs each (shadows.size=target).
    2 size >= n: the halves of the whole pool. Else halves of 2 size pool pairs: member_eval and
    nonmember_eval, then nonmember_known, then aux_pool, the last tier that fits in part by a seeded draw
    (one for every shadow, so each chosen pair is IN for exactly half); the others are OUT of all."""
    if 2 * size >= len(uids):
        return halves(uids, num_shadows, seed)
    rng = np.random.default_rng([seed, 2**20])  # apart from the halves' streams [seed, j]
    tiers = [
        np.r_[tuple(np.arange(len(uids))[offsets[name]] for name in SCORED)],
        np.arange(len(uids))[offsets[NONMEMBER_KNOWN]],
        np.arange(len(uids))[offsets[AUX_POOL]],
    ]
    chosen, room = [], 2 * size
    for rows in tiers:
        rows = rows[np.argsort(uids[rows])]  # by content, not by the order the sets come in
        take = rows if len(rows) <= room else rows[np.sort(rng.permutation(len(rows))[:room])]
        chosen.append(take)
        room -= len(take)
    chosen = np.concatenate(chosen)
    inside = np.zeros((num_shadows, len(uids)), dtype=bool)
    inside[:, chosen] = halves(uids[chosen], num_shadows, seed)
    return inside


def filler_need(size: int, pool_size: int) -> int:
    """Filler pairs the larger need of the two halves: N - floor(n / 2), or 0."""
    return max(0, size - pool_size // 2)


def draw_filler(filler: Filler, count: int, seed: int, index: int) -> np.ndarray:
    """Shadow `index`'s filler: `count` pairs drawn with (seed, index) from the sorted filler pairs, so
    it depends on neither the order they come in nor the number of shadows."""
    if count <= 0:
        return np.array([], dtype=str)
    return filler.uids[
        np.sort(np.random.default_rng([seed, index, 1]).permutation(len(filler.uids))[:count])
    ]


def masked_mean(stats, mask) -> np.ndarray:
    """Per-pair mean of stats[m, k] over the shadows m with mask[m, k] (IN or OUT); NaN for a pair no
    shadow has on that side (a pool pair left out of every shadow under shadows.size=target)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(mask, stats, 0).sum(0) / mask.sum(0)


def shadow_tag(seed: int, index: int) -> str:
    return f"reference-half/seed{seed}/shadow{index}"


def scaled_tag(seed: int, index: int, size: int) -> str:
    return f"target-scale/seed{seed}/N{size}/shadow{index}"


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


def check_num_shadows(num_shadows):
    require(
        is_int(num_shadows) and num_shadows >= 2 and num_shadows % 2 == 0,
        "num_shadows",
        num_shadows,
        "an even number >= 2 (complementary halves put every pair IN exactly half of the shadows)",
    )


def check_shadow_settings(num_shadows, statistic: str, shadows) -> ShadowSettings:
    """Refuse bad shadow settings when the attack is configured, before any model is trained."""
    check_num_shadows(num_shadows)
    require(statistic in STATISTICS, "statistic", statistic, f"choose one of {STATISTICS}")
    return ShadowSettings.parse(shadows)


def shadow_trainer(
    attacks: dict, spec, splits, cache_dir, size, canaries=None, holdout: int | None = None
):
    """How a job's shadows train: a function (shards, target key) -> ShadowTrainer, for once the target is
    known, or None where no attack needs shadows. Called right after the splits: it refuses a
    shadows.size=target whose filler pool is too small for N (check_scale) before any model trains."""
    if not any(getattr(a, "needs_shadows", False) for a in attacks.values()):
        return None
    members = splits.members.base if isinstance(splits.members, Members) else splits.members
    taken = np.concatenate(
        [
            np.asarray(members, str),
            *(np.asarray(getattr(splits, name), str) for name in EVAL_SETS),
            np.asarray([] if canaries is None else canaries.uids, str),
        ]
    )  # never filler

    def trainer(shards, target_key):
        return ShadowTrainer(spec, shards, cache_dir, target_key, past=splits.past, taken=taken)

    check_scale(attacks, size, splits, trainer([], None), spec.epochs, holdout)
    return trainer


def check_scale(
    attacks: dict, size, splits, trainer: ShadowTrainer, epochs: int, holdout: int | None = None
):
    """Refuse, right after the splits and before any model trains, a shadows.size=target whose filler
    pool is too small for N, naming attack.<name>.shadows.size; log each shadow attack's training plan
    (pairs x epochs x shadows). `attacks`: {name: Attack}; `size`: the target's N (None: unknown)."""
    n_pool = sum(len(getattr(splits, name)) for name in EVAL_SETS)
    k = len(splits.member_eval)
    for name, attack in attacks.items():
        if not getattr(attack, "needs_shadows", False):
            continue
        settings, m = attack.shadows, attack.num_shadows
        key = f"{attack.key}.shadows.size"
        if settings.size == "pool":
            log.info(
                "%s: %d shadows x %d pairs (halves of the reference pool of %d) x %d epochs = %d samples "
                "(shadows.size=pool)",
                name,
                m,
                n_pool - n_pool // 2,
                n_pool,
                epochs,
                m * (n_pool - n_pool // 2) * epochs,
            )
            continue
        require(
            size is not None,
            key,
            "target",
            "needs the target's N, and this target has none: set "
            "target.size (the N its owner reports) or shadows.size=pool",
        )
        require(
            size >= k,
            key,
            "target",
            f"N = {size} is below data.split.eval_size = {k}: the scored pairs "
            "would not all fit in the shadows' halves; set shadows.size=pool",
        )
        need = filler_need(size, n_pool)
        try:
            filler = trainer.filler(settings.pool)
        except ConfigError as err:
            raise err.under(attack.key) from None
        if need > len(filler.uids):
            more = need - len(filler.uids)
            to = "" if holdout is None else f" to {holdout + more} or more"
            fix = (
                f"raise data.split.holdout{to} (by {more}, plus what de-duplication drops), point "
                "shadows.pool at a shard folder of the auditor's own pairs"
                if settings.pool is None
                else f"point shadows.pool at a folder of at least {need} pairs no split uses"
            )
            raise ConfigError(
                key,
                "target",
                f"N = {size} needs {need} filler pairs beside the half of the "
                f"reference pool ({n_pool // 2} of {n_pool} pairs), and {filler.where} holds "
                f"{len(filler.uids)}; {fix}, or set shadows.size=pool (shadows on halves of the "
                f"pool, {n_pool - n_pool // 2} pairs)",
            )
        source = (
            f"{size - need} from halves of the reference pool of {n_pool}, {need} filler from {filler.where}"
            if 2 * size >= n_pool
            else f"halves of {2 * size} of the reference pool's {n_pool} pairs, "
            "the scored ones first; no filler"
        )
        log.info(
            "%s: %d shadows x %d pairs (%s) x %d epochs = %d samples (shadows.size=target; the target: "
            "%d x %d)",
            name,
            m,
            size,
            source,
            epochs,
            m * size * epochs,
            size,
            epochs,
        )


def _load_tensors(ctx):
    """Pool images and tokens, read and preprocessed once per call (only if some shadow needs them)."""
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
    """Train (or load) the shadows and compute the statistic of every pool pair under each.
    `settings` None: shadows.size=pool. The attack checked num_shadows and statistic when it was built
    (check_shadow_settings)."""
    settings = settings or ShadowSettings("pool", None, 0)
    if ctx.shadows is None:
        raise ValueError("this attack needs shadow models, and this job has no way to train them")
    uids, offsets = pool(ctx)
    if len(np.unique(uids)) < len(uids):
        raise ValueError(
            "the reference pool holds a uid twice: the evaluation sets must be disjoint"
        )
    bank = np.arange(len(uids))[offsets[NONMEMBER_KNOWN]]
    exclude = np.full(len(uids), -1)
    exclude[bank] = np.arange(len(bank))
    pool_key = config_hash(list(uids))

    if settings.size == "pool":
        inside = halves(uids, num_shadows, ctx.seed)
        size, filler = None, None
    else:
        size = ctx.target.size
        require(
            size is not None,
            "shadows.size",
            "target",
            "needs the target's N, and this target has none: set target.size or shadows.size=pool",
        )
        inside = scaled_halves(uids, offsets, num_shadows, settings.seed, size)
        filler = ctx.shadows.filler(settings.pool)
        need = filler_need(size, len(uids))
        if need > len(
            filler.uids
        ):  # check_scale refuses this before any training; a direct call gets here
            raise ConfigError(
                "shadows.size",
                "target",
                f"N = {size} needs {need} filler pairs, and "
                f"{filler.where} holds {len(filler.uids)}; set shadows.size=pool",
            )

    loaded = {}

    def tensors():  # the pool's pairs, read and preprocessed at most once per call
        if "pool" not in loaded:
            loaded["pool"] = _load_tensors(ctx)
        return loaded["pool"]

    keys, dirs, trained, stats, sizes = [], [], 0, [], []
    for m in range(num_shadows):
        mine = sorted(uids[inside[m]])
        if filler is None:
            shadow = ctx.shadows.train(mine, shadow_tag(ctx.seed, m))
        else:
            mine += list(draw_filler(filler, size - len(mine), settings.seed, m))
            shadow = ctx.shadows.train_scaled(
                mine, scaled_tag(settings.seed, m, size), settings.seed, filler
            )
        keys.append(shadow.key), dirs.append(shadow.dir), sizes.append(len(mine))
        trained += not shadow.cache_hit
        image, text, tau = shadow_embeddings(shadow, pool_key, tensors)
        stats.append(pair_statistic(image, text, tau, bank, exclude, statistic))

    image = np.concatenate([ctx.features[name].image for name in EVAL_SETS])
    text = np.concatenate([ctx.features[name].text for name in EVAL_SETS])
    target = pair_statistic(image, text, logit_scale(ctx.target.model), bank, exclude, statistic)
    log.info(
        "reference models: %d shadows (%d trained now) of %d pairs each, %d of them from a pool of %d pairs "
        "(shadows.size=%s)",
        num_shadows,
        trained,
        sizes[0],
        int(inside[0].sum()),
        len(uids),
        settings.size,
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
        size_setting=settings.size,
    )
