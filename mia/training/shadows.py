"""Shadow CLIPs, the reference models of LiRA and RMIA: which pairs each one trains on, and their
training through the cached training stage, like the target's. The job trains every set its
attacks need once the target is known and before any attack runs (ShadowPlan.train,
train_references); the attacks receive them trained (mia/attacks/shadows.py computes their
per-pair statistics).

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
- pool: halves of the pool, seeded by the job's seed, keyed by the target.

Training seeds: shadow m trains (initial weights, batch order, any defense's noise) with
shadow_seed(s, m), s being shadows.seed under size=target and the job's seed under size=pool: a
SeedSequence draw of (s, m) in [2**31, 2**32), where no job's `seed`, hence no target's, can lie
(mia.training.spec.SHADOW_SEEDS). So no shadow starts from a target's initial weights, which an
auditor would not know, nor, but by a 2**-31 chance, from another shadow's. The seed is in the
shadow's cache key and in the attacks' diagnostics (`shadow_seeds`).

Reference models of the auditor's own (`shadows.paths`): a list of {checkpoint, uids} entries, each
a CLIP trained elsewhere (an open_clip checkpoint, a plain state dict of the `model` group's
architecture, or an exported open_clip folder) and the uid list it trained on. They replace the
trained shadows: nothing trains, a pool pair is IN a reference exactly when its list holds it, and
size, pool, seed and the attacks' num_shadows are unused. A missing file is refused when the
attacks are built; lists that do not give each attack the IN / OUT references it needs for the
evaluation pairs (`Coverage`, declared by the attack) are refused right after the splits
(`check_references`), before the target is trained or loaded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from mia import checkpoint, distributed
from mia.cache import Layout, config_hash
from mia.cache import busy as cache_busy
from mia.data import shards as sh
from mia.data.corpus import indexed
from mia.data.generated import Members
from mia.data.splits import AUX_POOL, EVAL_SETS, NONMEMBER_KNOWN, SCORED
from mia.data.uids import read_uids
from mia.training.spec import SHADOW_SEEDS
from mia.training.stage import Target, checkpoint_target, train_target
from mia.validate import ConfigError, is_int, require

log = logging.getLogger(__name__)

SIZES = ("target", "pool")
SETTINGS = ("size", "pool", "seed", "paths")


@dataclass(frozen=True)
class Reference:
    """One entry of shadows.paths: a reference model the auditor trained, and what it trained on."""

    checkpoint: str  # a checkpoint file or an exported open_clip folder
    uids: str  # its uid list (.txt, .parquet, .npy: mia/data/uids.py)
    trained: np.ndarray = field(compare=False, repr=False)  # the list's uids, sorted

    @classmethod
    def parse(cls, entry, key: str) -> Reference:
        require(
            isinstance(entry, dict) and set(entry) == {"checkpoint", "uids"},
            key,
            entry,
            "must be a mapping of checkpoint (a file or exported open_clip folder) and uids "
            "(the uid list it trained on), e.g. {checkpoint: ref0.pt, uids: ref0.txt}",
        )
        path = entry["checkpoint"]
        require(
            isinstance(path, str)
            and (
                Path(path).is_file()
                or (Path(path).is_dir() and (Path(path) / checkpoint.CONFIG_FILE).is_file())
            ),
            f"{key}.checkpoint",
            path,
            "no such checkpoint file or exported open_clip folder: point it at the reference "
            "model's weights",
        )
        try:
            trained = read_uids(entry["uids"], f"{key}.uids")
        except (OSError, ValueError) as err:  # read_uids names the key first: keep its reason
            raise ConfigError(f"{key}.uids", need=str(err)[len(f"{key}.uids") :]) from None
        return cls(path, str(entry["uids"]), np.unique(trained))


@dataclass(frozen=True)
class Coverage:
    """What an attack needs of the reference models of shadows.paths: every pair of `sets` IN at
    least `inside` of them and OUT of at least `outside`, at least `models` of them, and, where
    `mixed`, each one IN for some pool pair and OUT for another. `why`: the settings that ask it."""

    sets: tuple
    inside: int = 0
    outside: int = 0
    models: int = 1
    mixed: bool = False
    why: str = ""


@dataclass(frozen=True)
class ShadowSettings:
    """The `shadows` node of lira and rmia (conf/shadows/default.yaml, interpolated into both)."""

    size: str  # target: N pairs each, the target's N; pool: halves of the reference pool only
    pool: (
        str | None
    )  # shard folder of the auditor's own i.i.d. pairs for filler; None: the held-out pairs
    seed: int  # halves, filler, training seeds under size=target (the job's seed under size=pool)
    paths: tuple = ()  # Reference models of the auditor's own, used instead of training; () trains

    @classmethod
    def parse(cls, **node) -> ShadowSettings:
        """The `shadows` group (its `_target_`), checked; each key refused names shadows.<key>."""
        unknown = sorted(set(node) - set(SETTINGS))
        if unknown:
            raise ConfigError(
                f"shadows.{unknown[0]}", need=f"is not a setting of shadows ({', '.join(SETTINGS)})"
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
            "a shard folder of the auditor's own pairs, or null (the held-out pairs past the "
            "splits)",
        )
        require(is_int(seed) and seed >= 0, "shadows.seed", seed, "an integer >= 0")
        entries = node.get("paths")
        require(
            entries is None or (isinstance(entries, list) and entries),
            "shadows.paths",
            entries,
            "a non-empty list of {checkpoint, uids} entries (reference models and the uid lists "
            "they trained on), or null to train shadows",
        )
        paths = tuple(
            Reference.parse(e, f"shadows.paths[{i}]") for i, e in enumerate(entries or [])
        )
        return cls(size, folder, int(seed), paths)


@dataclass
class Filler:
    """The auditor's own i.i.d. pairs beyond the reference pool that shadows may fill up with."""

    uids: np.ndarray  # sorted
    shards: list  # where they are read from, beside the job's shards
    where: str  # for messages: "the held-out pool past the splits" or "shadows.pool=<folder>"


@dataclass
class ShadowSet:
    """One attack's shadows over the reference pool `uids`: `inside[m, k]` says shadow m trains on
    pool pair k, `members[m]` lists every pair it trains on (its pool pairs, then any filler),
    `seeds[m]` its training seed (None for the reference models of shadows.paths). `obtain(m)`
    trains shadow m, or loads it from the cache; `busy(m)` says whether another job is training it
    now. The training stage trains every shadow once (`fit`); the attacks then iterate, which loads
    one shadow at a time, so that one model is held at once.
    `trained`: the shadows `fit` trained (the others were in the cache)."""

    inside: np.ndarray
    members: list
    obtain: Callable[[int], Target]
    seeds: list | None = None
    uids: np.ndarray | None = None
    trained: int = 0
    busy: Callable[[int], bool] = lambda m: False

    def __len__(self) -> int:
        return len(self.members)

    def __iter__(self) -> Iterator[Target]:
        return (self.obtain(m) for m in range(len(self.members)))

    def fit(self) -> ShadowSet:
        """Train (or find in the cache) every shadow, holding none of them after; the reference
        models of shadows.paths are trained elsewhere and only loaded when iterated. Jobs that run
        at once and share shadows (a sweep's seeds under shadows.size=target) split them: each
        takes the first shadow no other job is training, and waits for the others' only when none
        is left. A shadow's weights depend on its spec alone, so the order moves no bit."""
        pending = [] if self.seeds is None else list(range(len(self.members)))
        while pending:
            m = next((m for m in pending if not self.busy(m)), pending[0])
            pending.remove(m)
            self.trained += not self.obtain(m).cache_hit
        return self


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

    def pool_key(self, uids, tag: str, seed: int) -> str:
        """The cache key of a shadow of shadows.size=pool: the target's key (the job's seed and N
        included), its training seed (shadow_seed) and its uids."""
        return config_hash(
            {
                "target": self.target_key,
                "shadow": tag,
                "seed": seed,
                "uids": config_hash(sorted(uids)),
            }
        )

    def scaled_key(self, uids, tag: str, seed: int, shards_hash: str) -> str:
        """The cache key of a shadow of shadows.size=target: what defines its weights (the target's
        recipe but its training seed, the shards it reads, by `shards_hash`, the uids), not the
        target, so the seeds of a sweep share it."""
        return config_hash(
            {
                "shadow": tag,
                "weights": replace(self.spec, seed=seed).weights_key(),
                "uids": config_hash(sorted(uids)),
                "shards": shards_hash,
            }
        )

    def trained_set(self, inside, members: list, seeds: list, shards: list, keys: list, uids):
        """The ShadowSet whose shadow m trains with seeds[m] on members[m], read from `shards`, and
        is cached under keys[m]."""
        return ShadowSet(
            inside,
            members,
            lambda m: train_target(
                replace(self.spec, seed=seeds[m]),
                shards,
                list(members[m]),
                self.cache_dir,
                keys[m],
                export=False,
            ),
            seeds,
            uids,
            busy=lambda m: cache_busy(Layout(self.cache_dir).target(keys[m])),
        )

    def shadows(
        self, uids, offsets: dict, num_shadows: int, settings: ShadowSettings, seed: int, size
    ) -> ShadowSet:
        """The shadows of one attack over the reference pool `uids` (its sets at `offsets`). Under
        shadows.size=pool: halves of the pool seeded by the job's `seed`. Under shadows.size=target:
        `size` (the target's N) pairs each, halves seeded by shadows.seed, topped up with filler.
        Under shadows.paths: the auditor's reference models, whatever num_shadows; none trains."""
        if settings.paths:
            return self.references(uids, settings.paths)
        if settings.size == "pool":
            inside = halves(uids, num_shadows, seed)
            members = [sorted(uids[inside[m]]) for m in range(num_shadows)]
            seeds = [shadow_seed(seed, m) for m in range(num_shadows)]
            keys = [
                self.pool_key(members[m], shadow_tag(seed, m), seeds[m]) for m in range(num_shadows)
            ]
            return self.trained_set(inside, members, seeds, self.shards, keys, uids)
        require(
            size is not None,
            "shadows.size",
            "target",
            "needs the target's N, and this target has none: set target.size or shadows.size=pool",
        )
        inside = scaled_halves(uids, offsets, num_shadows, settings.seed, size)
        filler = self.filler_for(settings, size, len(uids))
        members = []
        for m in range(num_shadows):
            mine = sorted(uids[inside[m]])
            members.append(mine + list(draw_filler(filler, size - len(mine), settings.seed, m)))
        seeds = [shadow_seed(settings.seed, m) for m in range(num_shadows)]
        shards = self.shards + [s for s in filler.shards if s not in self.shards]
        shards_hash = config_hash(sh.shard_fingerprint(shards))
        keys = [
            self.scaled_key(members[m], scaled_tag(settings.seed, m, size), seeds[m], shards_hash)
            for m in range(num_shadows)
        ]
        return self.trained_set(inside, members, seeds, shards, keys, uids)

    def references(self, uids, paths: tuple) -> ShadowSet:
        """The reference models of shadows.paths over the pool `uids`: IN where a model's list holds
        the pair. Each is loaded (not trained) as a target=checkpoint is, its features cached by its
        checkpoint's content hash, onto the device shadows would train on."""
        inside = np.stack([np.isin(uids, ref.trained) for ref in paths])
        device = distributed.single(self.spec.trainer).device
        return ShadowSet(
            inside,
            [list(ref.trained) for ref in paths],
            lambda m: checkpoint_target(
                paths[m].checkpoint,
                None,
                self.spec.model,
                self.cache_dir,
                device,
                size=len(paths[m].trained),
            ),
            uids=uids,
        )

    def filler_for(
        self, settings: ShadowSettings, size: int, n_pool: int, holdout: int | None = None
    ) -> Filler:
        """The filler of shadows.size=target at N = `size` beside a reference pool of `n_pool`
        pairs, refused naming shadows.size where it holds fewer pairs than the larger half lacks.
        `holdout` (data.split.holdout) sizes the fix, where the filler is the held-out pairs."""
        need = filler_need(size, n_pool)
        filler = self.filler(settings.pool)
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
                "shadows.size",
                "target",
                f"N = {size} needs {need} filler pairs beside the half of the "
                f"reference pool ({n_pool // 2} of {n_pool} pairs), and {filler.where} holds "
                f"{len(filler.uids)}; {fix}, or set shadows.size=pool (shadows on halves of the "
                f"pool, {n_pool - n_pool // 2} pairs)",
            )
        return filler

    def filler(self, folder: str | None) -> Filler:
        """The filler pairs: the held-out pairs past every split, or those of the folder
        `shadows.pool` (indexed once, cached), less any uid a split or canary uses."""
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


def halves(uids: np.ndarray, num_shadows: int, seed: int) -> np.ndarray:
    """[num_shadows, n] membership: shadows 2j and 2j+1 split the pool in two complementary
    halves."""
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
    """[num_shadows, n] membership of shadows that train on `size` pool pairs each
    (shadows.size=target). 2 size >= n: the halves of the whole pool. Else halves of 2 size pool
    pairs: member_eval and nonmember_eval, then nonmember_known, then aux_pool, the last tier that
    fits in part by a seeded draw (one for every shadow, so each chosen pair is IN for exactly
    half); the others are OUT of all."""
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
    """Shadow `index`'s filler: `count` pairs drawn with (seed, index) from the sorted filler pairs,
    so it depends on neither the order they come in nor the number of shadows."""
    if count <= 0:
        return np.array([], dtype=str)
    return filler.uids[
        np.sort(np.random.default_rng([seed, index, 1]).permutation(len(filler.uids))[:count])
    ]


# The SeedSequence of shadow_seed holds this word after (seed, index): apart from the streams of the
# halves [seed, j] and the filler [seed, index, 1].
TRAINING_STREAM = 2


def shadow_seed(seed: int, index: int) -> int:
    """Shadow `index`'s training seed: a SeedSequence draw of (seed, index) in
    [SHADOW_SEEDS, 2**32), which no job's seed reaches (the config's `seed` lies below
    SHADOW_SEEDS)."""
    word = int(np.random.SeedSequence([seed, index, TRAINING_STREAM]).generate_state(1)[0])
    return SHADOW_SEEDS + word % SHADOW_SEEDS


def shadow_tag(seed: int, index: int) -> str:
    return f"reference-half/seed{seed}/shadow{index}"


def scaled_tag(seed: int, index: int, size: int) -> str:
    return f"target-scale/seed{seed}/N{size}/shadow{index}"


def check_num_shadows(num_shadows):
    require(
        is_int(num_shadows) and num_shadows >= 2 and num_shadows % 2 == 0,
        "num_shadows",
        num_shadows,
        "an even number >= 2 (complementary halves put every pair IN exactly half of the shadows)",
    )


def pool_of(sets: dict) -> tuple[np.ndarray, dict]:
    """(uids, {set name: slice}) of the reference pool: EVAL_SETS concatenated, each in the order of
    `sets[name].uids` (the features' order, which the attacks' statistics follow)."""
    offsets, start = {}, 0
    for name in EVAL_SETS:
        offsets[name] = slice(start, start + len(sets[name].uids))
        start = offsets[name].stop
    return np.concatenate([sets[name].uids for name in EVAL_SETS]), offsets


def reference_key(num_shadows: int, settings: ShadowSettings) -> tuple:
    """Which ShadowSet an attack scores with: its num_shadows and shadows settings (shadows.paths:
    the auditor's models, whatever num_shadows). Attacks with equal keys share one set."""
    return (None if settings.paths else num_shadows, settings)


def train_references(attacks, trainer: ShadowTrainer, sets: dict, seed: int, size) -> dict:
    """The reference models of `attacks` (those that need shadows), trained or loaded from the cache
    by `trainer` over the reference pool of `sets` (pool_of), in the attacks' order, each set once:
    {reference_key: ShadowSet}. `seed`: the job's (shadows.size=pool); `size`: the target's N."""
    uids, offsets = pool_of(sets)
    found = {}
    for attack in attacks:
        if not getattr(attack, "needs_shadows", False):
            continue
        key = reference_key(attack.num_shadows, attack.shadows)
        if key not in found:
            found[key] = trainer.shadows(
                uids, offsets, attack.num_shadows, attack.shadows, seed, size
            ).fit()
    return found


class ShadowPlan:
    """The shadows a job's attacks ask for (none, for most jobs), set up right after the splits,
    where a shadows.size=target whose filler is too small for N is refused (check_scale) before any
    model trains. `train` trains them (or loads them from the cache) once the target is known, for
    the attacks to receive. `size`: the target's N (None: unknown)."""

    def __init__(self, attacks: dict, spec, splits, cache_dir, size, canaries=None, holdout=None):
        self.wanted = any(getattr(a, "needs_shadows", False) for a in attacks.values())
        self.attacks, self.spec, self.splits, self.cache_dir = attacks, spec, splits, cache_dir
        if not self.wanted:
            return
        members = splits.members.base if isinstance(splits.members, Members) else splits.members
        self.taken = np.concatenate(
            [
                np.asarray(members, str),
                *(np.asarray(getattr(splits, name), str) for name in EVAL_SETS),
                np.asarray([] if canaries is None else canaries.uids, str),
            ]
        )  # never filler
        trained = {
            k: a
            for k, a in attacks.items()
            if not getattr(a, "shadows", None) or not a.shadows.paths
        }
        check_scale(trained, size, splits, self.trainer([], None), spec.epochs, holdout)
        check_references(attacks, splits)

    def train(self, shards, target, features: dict, seed: int) -> dict:
        """The training stage's reference models, after the target: {reference_key: ShadowSet} of
        every set the attacks need, over the reference pool of the target's `features`; {} where no
        attack needs shadows (nothing trains)."""
        if not self.wanted:
            return {}
        trainer = self.trainer(shards, target.key)
        return train_references(self.attacks.values(), trainer, features, seed, target.size)

    def trainer(self, shards, target_key: str | None) -> ShadowTrainer | None:
        if not self.wanted:
            return None
        return ShadowTrainer(
            self.spec,
            shards,
            self.cache_dir,
            target_key,
            past=self.splits.past,
            taken=self.taken,
        )


def check_scale(
    attacks: dict, size, splits, trainer: ShadowTrainer, epochs: int, holdout: int | None = None
):
    """Refuse, right after the splits and before any model trains, a shadows.size=target whose
    filler pool is too small for N, naming attack.<name>.shadows.size; log each shadow attack's
    training plan (pairs x epochs x shadows). `attacks`: {name: Attack}; `size`: the target's N
    (None: unknown)."""
    n_pool = sum(len(getattr(splits, name)) for name in EVAL_SETS)
    k = len(splits.member_eval)
    for name, attack in attacks.items():
        if not getattr(attack, "needs_shadows", False):
            continue
        settings, m = attack.shadows, attack.num_shadows
        key = f"{attack.key}.shadows.size"
        if settings.size == "pool":
            log.info(
                "%s: %d shadows x %d pairs (halves of the reference pool of %d) x %d epochs = %d "
                "samples "
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
            filler = trainer.filler_for(settings, size, n_pool, holdout)
        except ConfigError as err:
            raise err.under(attack.key) from None
        source = (
            f"{size - need} from halves of the reference pool of {n_pool}, {need} filler from "
            f"{filler.where}"
            if 2 * size >= n_pool
            else f"halves of {2 * size} of the reference pool's {n_pool} pairs, "
            "the scored ones first; no filler"
        )
        log.info(
            "%s: %d shadows x %d pairs (%s) x %d epochs = %d samples (shadows.size=target; the "
            "target: "
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


def check_references(attacks: dict, splits):
    """Refuse, right after the splits and before the target is trained or loaded, reference models
    of shadows.paths that do not give an attack what it needs (its `reference_needs()`, a Coverage)
    for the evaluation pairs, naming attack.<name>.shadows.paths, how many pairs fall short, one uid
    and the fix; log each such attack's references."""
    sets = {name: np.asarray(getattr(splits, name), str) for name in EVAL_SETS}
    for name, attack in attacks.items():
        settings = getattr(attack, "shadows", None)
        if not getattr(attack, "needs_shadows", False) or not settings or not settings.paths:
            continue
        need, key = attack.reference_needs(), f"{attack.key}.shadows.paths"
        m = len(settings.paths)
        how = f"{name} ({need.why})" if need.why else name
        require(
            m >= need.models,
            key,
            f"{m} models",
            f"{how} needs at least {need.models} reference models: list more, or "
            "set shadows.paths=null to train shadows",
        )
        pool = np.concatenate(list(sets.values()))
        if need.mixed:
            counts = np.stack([np.isin(pool, ref.trained) for ref in settings.paths]).sum(1)
            lopsided = [i for i, c in enumerate(counts) if c in (0, len(pool))]
            require(
                not lopsided,
                key,
                f"{m} models",
                f"shadows.paths[{lopsided[0] if lopsided else 0}] trained on "
                f"{'none' if lopsided and counts[lopsided[0]] == 0 else 'all'} of the "
                f"{len(pool)} pool pairs, and {how} tunes a by attacking each reference with "
                "the others: every reference must train on some pool pairs and not on others",
            )
        rows = np.concatenate([sets[s] for s in need.sets]) if need.sets else np.array([], str)
        inside = np.stack([np.isin(rows, ref.trained) for ref in settings.paths]).sum(0)
        for side, count, least in (
            ("IN", inside, need.inside),
            ("OUT of", m - inside, need.outside),
        ):
            short = np.flatnonzero(count < least)
            require(
                len(short) == 0,
                key,
                f"{m} models",
                f"{len(short)} of the {len(rows)} pairs of {'+'.join(need.sets)} are {side} fewer "
                f"than {least} of them (e.g. uid {rows[short[0]] if len(short) else ''}), and "
                f"{how} needs each {side} at least {least}: list reference models "
                f"{'trained on' if side == 'IN' else 'not trained on'} them, or set "
                "shadows.paths=null to train shadows",
            )
        log.info(
            "%s: %d reference models of shadows.paths (nothing trained): each evaluation pair IN "
            "%d to %d of them",
            name,
            m,
            int(inside.min()) if len(inside) else 0,
            int(inside.max()) if len(inside) else 0,
        )
