"""Member / non-member splits by uid (docs/design.md §2), de-duplicated across the boundary and
checked disjoint before anything is trained.

Member corpus, after a seeded permutation:  [ held out (H) | member pool ]
- member pool: a target with data.size=N trains on its first N uids (nested across a sweep);
- member_eval: the first K uids of the pool (K = scored_size: eval_size, at most N - aux_size/2);
- held out (or the shifted corpus, for nonmembers=ood): nonmember_eval (K), then
  nonmember_known (D_no), then the non-member half of aux_pool (D_all). Under data.shift the
  held-out pairs are read from the member corpus with some images or captions swapped (§2.6).
When the held-out part is short of the non-member sets, it grows from the far end of the pool
(_grow). The member pool depends only on the member corpus, split.seed and split.holdout.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import numpy as np

from mia.data import dedup
from mia.data.generated import Members
from mia.data.synthetic import sample_index
from mia.sizes import format_size, parse_size
from mia.validate import ConfigError, is_int, require

# The sets an attacker holds features of, by the names every module uses for them.
MEMBER_EVAL = "member_eval"  # scored members: the first K uids of the member pool
NONMEMBER_EVAL = "nonmember_eval"  # scored non-members
NONMEMBER_KNOWN = "nonmember_known"  # D_no: non-members the attacker knows to be non-members
AUX_POOL = "aux_pool"  # D_all: unlabelled, half members and half non-members
EVAL_SETS = (MEMBER_EVAL, NONMEMBER_EVAL, NONMEMBER_KNOWN, AUX_POOL)
SCORED = (MEMBER_EVAL, NONMEMBER_EVAL)  # the two sets every attack scores, in this order


def _dropped(side: dict, other: dict, n: int, rules):
    """Which of the `n` pairs of `side` have a key that occurs in `other` under some rule, and how
    many each rule dropped. A pair two rules would drop counts for the first, in config order."""
    drop, by_rule = np.zeros(n, bool), {}
    for r in rules:
        hit = np.isin(side[r], other[r][other[r] >= 0])
        by_rule[r] = int((hit & ~drop).sum())
        drop |= hit
    return drop, by_rule


@dataclass
class _Draw:
    """The member pool and the non-member candidates of one holdout, after de-duplication."""

    pool: np.ndarray  # member pool uids, in order
    nonmembers: np.ndarray  # held-out (or OOD) uids, in order
    dropped: dict  # {"member pool" | "held out" | "OOD corpus": {rule: pairs dropped there}}
    # the member-corpus (i.i.d.) uids of the held-out pairs: row for row with `nonmembers` where
    # those are held-out pairs (i.i.d. or swapped), every kept held-out pair where the non-members
    # are OOD
    held: np.ndarray = None
    extra: int = 0  # held-out pairs taken from the far end of the permutation (_grow)

    @property
    def total(self) -> int:
        return sum(sum(by_rule.values()) for by_rule in self.dropped.values())


def _draw(
    member_index,
    codes,
    order,
    holdout,
    rules,
    nonmember_index=None,
    ood_order=None,
    shifted_index=None,
    extra: int = 0,
) -> _Draw:
    """`extra` > 0 grows the held-out part from the far end of the permutation (see _grow): those
    pairs are only filtered against the pool, like OOD ones, so the pool's first uids stay what they
    were."""
    end = len(order) - extra
    held, pool, far = order[:holdout], order[holdout:end], order[end:]
    pool_codes, held_codes = ({r: c[rows] for r, c in codes[0].items()} for rows in (pool, held))
    drop_pool, by_pool = _dropped(pool_codes, held_codes, len(pool), rules)
    drop_held, by_held = _dropped(held_codes, pool_codes, len(held), rules)
    rows = held[~drop_held]
    dropped = {"member pool": by_pool, "held out": by_held}
    if extra:
        drop_far, dropped["held out (far end)"] = _dropped(
            {r: c[far] for r, c in codes[0].items()}, pool_codes, len(far), rules
        )
        rows = np.concatenate([rows, far[~drop_far]])
    draw = _Draw(member_index.uids[pool][~drop_pool], member_index.uids[rows], dropped)
    draw.held = draw.nonmembers
    if shifted_index is not None:
        # Shifted i.i.d. non-members (data.shift): the held-out rows the i.i.d. draw kept, read from
        # the shifted index and only filtered, like OOD ones, so the member pool stays the i.i.d.
        # one. Unswapped rows passed this very filter above: at shift 0 the draw is the i.i.d. one.
        drop_shift, by_shift = _dropped(
            {r: c[rows] for r, c in codes[1].items()}, pool_codes, len(rows), rules
        )
        draw.nonmembers = shifted_index.uids[rows][~drop_shift]
        draw.held = member_index.uids[rows][~drop_shift]
        draw.dropped["shifted held out"] = by_shift
    if nonmember_index is not None:
        # OOD non-members are only filtered, so the member pool (and the cached targets) do not
        # depend on the non-member condition: iid and ood attack the very same targets.
        ood_codes = {r: c[ood_order] for r, c in codes[1].items()}
        drop_ood, by_ood = _dropped(ood_codes, pool_codes, len(ood_order), rules)
        draw.nonmembers = nonmember_index.uids[ood_order][~drop_ood]
        draw.dropped["OOD corpus"] = by_ood
    draw.extra = extra
    return draw


def _grow(draw, d: _Draw, sizes: _Sizes, corpus: int) -> _Draw:
    """The draw whose held-out part holds the i.i.d. non-member sets, grown from the far end of the
    permutation when `data.split.holdout` is short (large eval_size): the member pool loses pairs
    only past its first N, so members, member_eval and the cached targets stay the same. `d` itself
    when it needs no growth, or when growing would reach into the first N pairs of the pool."""
    extra, got = 0, d
    for _ in range(
        5
    ):  # de-duplication may drop a few of the far-end pairs: grow by the shortfall again
        short = sizes.need - len(got.nonmembers)
        if short <= 0:
            return got
        extra += short
        if sizes.holdout + extra >= corpus:
            return d
        got = draw(sizes.holdout, extra)
        if len(got.pool) < sizes.n:
            return d
    return d


@dataclass(frozen=True)
class SplitSpec:
    """`data.split`, parsed once: sizes as integers, the de-duplication rules checked."""

    seed: int
    holdout: int  # held-out non-member pairs (before de-duplication)
    eval_size: int  # K members and K non-members scored
    known_size: int  # D_no
    aux_size: int  # D_all
    dedup: tuple = dedup.DEFAULT_DEDUP
    validation: int = (
        0  # V members and V non-members set aside for choosing settings (docs/design.md §2.3)
    )
    scored: str = "eval"  # which pairs the attacks score: eval (the reported ones) or validation

    @classmethod
    def parse(cls, cfg) -> SplitSpec:
        """From the `data.split` mapping; a bad value is refused naming its key."""
        for key in sorted(set(cfg) - {f.name for f in fields(cls)}):
            raise ConfigError(
                f"data.split.{key}", need="is not a setting of data.split (conf/shared/data.yaml)"
            )
        require(
            is_int(cfg["seed"]) and cfg["seed"] >= 0,
            "data.split.seed",
            cfg["seed"],
            "must be an integer >= 0",
        )
        return cls(
            seed=int(cfg["seed"]),
            holdout=parse_size(cfg["holdout"], "data.split.holdout", minimum=0),
            eval_size=parse_size(cfg["eval_size"], "data.split.eval_size"),
            known_size=parse_size(cfg["known_size"], "data.split.known_size"),
            aux_size=parse_size(cfg["aux_size"], "data.split.aux_size"),
            dedup=dedup.dedup_rules(cfg),
            validation=parse_size(cfg.get("validation", 0), "data.split.validation", minimum=0),
            scored=_scored(cfg.get("scored", "eval"), cfg.get("validation", 0)),
        )


@dataclass
class Splits:
    members: (
        np.ndarray | Members
    )  # uids the target trains on: member_pool[:N], or past it (Members)
    member_pool_size: int
    held_out_extra: (
        int  # held-out pairs taken from the far end of the member pool (large eval_size), or 0
    )
    member_eval: np.ndarray
    nonmember_eval: np.ndarray
    nonmember_known: np.ndarray
    aux_pool: np.ndarray
    aux_is_member: np.ndarray  # ground truth of aux_pool, for diagnostics only, never for attacks
    dedup_dropped: int  # pairs dropped on either side of the boundary
    dedup_by_rule: dict = field(default_factory=dict)  # {rule: pairs it dropped}, summed over sides
    # eval: member_eval / nonmember_eval are the evaluation pairs; validation: the validation pairs
    # stand in their place, and the evaluation pairs are in no set at all
    scored: str = "eval"
    # held-out pairs that no non-member set uses, in order: where data.canaries come from
    # (mia/data/canaries.py)
    spare: np.ndarray = field(default_factory=lambda: np.array([], dtype=str))
    # i.i.d. member-corpus pairs past every split: held out, used by no set in any version (swapped
    # or not); the same as `spare` for i.i.d. non-members. Shadow models take filler from it
    # (mia/training/shadows.py)
    past: np.ndarray = field(default_factory=lambda: np.array([], dtype=str))
    # K, the evaluation pairs of each side: data.split.eval_size, capped by N (scored_size)
    eval_size: int = 0

    def summary(self) -> dict:
        return {
            "members": len(self.members),
            "member_pool": self.member_pool_size,
            "held_out_extra": self.held_out_extra,
            **{name: len(getattr(self, name)) for name in EVAL_SETS},
            "aux_members": int(self.aux_is_member.sum()),
            "scored": self.scored,
            "dedup_dropped": self.dedup_dropped,
            "dedup_by_rule": dict(self.dedup_by_rule),
        }


def check_disjoint(**sets):
    """Refuse any uid that sits in two of the named sets; the error names both sets."""
    names = list(sets)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            both = np.intersect1d(sets[a], sets[b])
            if len(both):
                raise ValueError(
                    f"{len(both)} uids are in both {a} and {b} (e.g. {list(both[:3])}): "
                    "member and non-member splits must be disjoint"
                )


def _refuse_duplicate_uids(uids, where):
    values, counts = np.unique(uids, return_counts=True)
    if (counts > 1).any():
        dup = values[counts > 1]
        raise ValueError(
            f"{where}: {len(dup)} uids occur more than once (e.g. {list(dup[:3])}); a uid could "
            "land on both sides of the member / non-member boundary, so the split is refused"
        )


def _scored(value, validation) -> str:
    require(
        value in ("eval", "validation"), "data.split.scored", value, "must be eval or validation"
    )
    require(
        value == "eval" or parse_size(validation, "data.split.validation", minimum=0) > 0,
        "data.split.scored",
        value,
        "needs validation pairs: set data.split.validation (e.g. 500)",
    )
    return value


def scored_size(n: int, eval_size: int, aux_size: int) -> int:
    """K, the members (and non-members) scored: data.split.eval_size, but at most the members D_all
    does not need, N - its member half, so weak supervision keeps trained members to learn from (at
    least min(N, eval_size) when N is below that half)."""
    room = n - (aux_size - aux_size // 2)
    return min(eval_size, room) if room >= 1 else max(0, min(eval_size, n))


@dataclass(frozen=True)
class _Sizes:
    n: int  # data.size
    k: int  # data.split.eval_size
    known: int  # data.split.known_size
    aux: int  # data.split.aux_size
    holdout: int  # data.split.holdout
    val: int = 0  # data.split.validation

    @property
    def need(self) -> int:
        """Non-members the sets take: nonmember_eval, nonmember_known, aux_pool's non-member half
        and the validation non-members."""
        return self.k + self.known + self.aux // 2 + self.val

    def overrides(self, size) -> str:
        parts = [] if size is None or self.n == size else [f"data.size={format_size(self.n)}"]
        parts += [
            f"data.split.{key}={format_size(getattr(self, f))}"
            for key, f in (
                ("holdout", "holdout"),
                ("eval_size", "k"),
                ("known_size", "known"),
                ("aux_size", "aux"),
            )
        ]
        return " ".join(parts)


def build_splits(
    member_index,
    split: SplitSpec,
    size: int | str | None,
    nonmember_index=None,
    shifted_index=None,
    extension: Members | None = None,
) -> Splits:
    """`nonmember_index` is the shifted corpus for the OOD condition, or the audited non-member
    folder; None means i.i.d. `shifted_index` (data.shift, mia.data.corpus.load_shifted) is the
    member index row for row with some pairs swapped: i.i.d. non-members are read from it. `size`
    None (audits of a CLIP trained elsewhere) makes every member pair a member. `extension` (the
    embedded corpus: an empty Members naming the first index past the shards and the corpus seed)
    lets data.size run past the member pool, into pairs generated on demand
    (docs/design.md §2.7)."""
    if nonmember_index is not None and shifted_index is not None:
        raise ValueError(
            "non-members come from a corpus of their own or from the shifted held-out pairs, not "
            "both"
        )
    if shifted_index is not None and len(shifted_index) != len(member_index):
        raise ValueError(
            f"the shifted index holds {len(shifted_index)} pairs and the member corpus "
            f"{len(member_index)}: it must stand in for the member corpus row for row"
        )
    # a parsed SplitSpec and an integer N from the job spec; a mapping and "1k" from a notebook or
    # test
    split = split if isinstance(split, SplitSpec) else SplitSpec.parse(split)
    size = None if size is None else parse_size(size, "data.size")
    whole = size is None
    sizes = _Sizes(
        n=0 if whole else size,
        k=split.eval_size,
        known=split.known_size,
        aux=split.aux_size,
        holdout=split.holdout,
        val=split.validation,
    )
    rules = split.dedup
    _refuse_duplicate_uids(member_index.uids, "member corpus")
    if nonmember_index is not None:
        _refuse_duplicate_uids(nonmember_index.uids, "non-member (OOD) corpus")
    if shifted_index is not None:
        _refuse_duplicate_uids(shifted_index.uids, "shifted member corpus (data.shift)")

    other = nonmember_index if shifted_index is None else shifted_index
    codes = dedup.codes((member_index,) if other is None else (member_index, other), rules)
    order = np.random.default_rng(split.seed).permutation(len(member_index))
    ood_order = (
        None
        if nonmember_index is None
        else np.random.default_rng(split.seed).permutation(len(nonmember_index))
    )

    def draw(holdout, extra=0):
        return _draw(
            member_index,
            codes,
            order,
            holdout,
            rules,
            nonmember_index,
            ood_order,
            shifted_index,
            extra,
        )

    d = draw(sizes.holdout) if sizes.holdout < len(member_index) else None
    if whole and d is not None:
        sizes = replace(sizes, n=len(d.pool))
    sizes = replace(sizes, k=scored_size(sizes.n - sizes.val, sizes.k, sizes.aux))
    require(
        sizes.k >= 1,
        "data.split.validation",
        sizes.val,
        f"leaves no member of data.size={sizes.n} to score: lower it or raise data.size",
    )
    if d is not None and not whole and nonmember_index is None:
        d = _grow(draw, d, sizes, len(member_index))
    problem = _problem(
        d,
        sizes,
        size,
        len(member_index),
        rules,
        ood=nonmember_index is not None,
        extendable=extension is not None,
    )
    if problem:
        fit = _fitting(draw, sizes, len(member_index), d, ood=nonmember_index is not None)
        corpora = (
            f"this corpus of {len(member_index)} pairs"
            if nonmember_index is None
            else f"these corpora of {len(member_index)} and {len(nonmember_index)} pairs"
        )
        message = problem + (f". Sizes that fit {corpora}: {fit.overrides(size)}" if fit else "")
        key = problem.split("=")[0] if problem.startswith("data.") else "data.split"
        raise ConfigError(
            key, need=message[len(key) :] if message.startswith(key) else f": {message}"
        )

    n, k, n_known, n_aux, need = sizes.n, sizes.k, sizes.known, sizes.aux, sizes.need
    pool_uids, non_uids = d.pool, d.nonmembers
    members = pool_uids[:n]
    if extension is not None and n > len(pool_uids):
        forbidden = dedup.forbidden(member_index, pool_uids, other, rules)
        members = extension.extended(pool_uids, n - len(pool_uids), forbidden)
        _refuse_generated_nonmembers(members, non_uids)
    aux_mem = pool_uids[k : min(n, k + n_aux - n_aux // 2)]  # trained on, but not in member_eval
    aux_non = non_uids[k + n_known : need - sizes.val]
    val_mem = pool_uids[
        k + len(aux_mem) : min(n, k + len(aux_mem) + sizes.val)
    ]  # trained on, in no other set
    val_non = non_uids[need - sizes.val : need]
    if len(val_mem) < sizes.val:
        raise ConfigError(
            "data.split.validation",
            sizes.val,
            f"needs {sizes.val} trained members beside "
            f"member_eval ({k}) and aux_pool's members ({len(aux_mem)}), and data.size={n} leaves "
            f"{len(val_mem)}: lower it to {len(val_mem)} or raise data.size",
        )
    aux = np.concatenate([aux_mem, aux_non])
    truth = np.concatenate([np.ones(len(aux_mem), bool), np.zeros(len(aux_non), bool)])
    perm = np.random.default_rng(split.seed + 1).permutation(len(aux))  # attackers see no order
    by_rule = {r: sum(side.get(r, 0) for side in d.dropped.values()) for r in rules}
    scored = (val_mem, val_non) if split.scored == "validation" else (pool_uids[:k], non_uids[:k])
    splits = Splits(
        members=members,
        member_pool_size=len(pool_uids),
        held_out_extra=d.extra,
        member_eval=scored[0],
        nonmember_eval=scored[1],
        nonmember_known=non_uids[k : k + n_known],
        aux_pool=aux[perm],
        aux_is_member=truth[perm],
        dedup_dropped=d.total,
        dedup_by_rule=by_rule,
        scored=split.scored,
        spare=non_uids[need:],
        past=d.held if nonmember_index is not None else d.held[need:],
        eval_size=k,
    )
    check_disjoint(
        members=pool_uids[:n],
        nonmember_eval=non_uids[:k],
        validation_nonmembers=val_non,
        nonmember_known=splits.nonmember_known,
        aux_nonmembers=aux_non,
    )
    check_disjoint(member_eval=pool_uids[:k], validation_members=val_mem, aux_members=aux_mem)
    check_disjoint(
        member_eval=splits.member_eval,
        nonmember_known=splits.nonmember_known,
        aux_pool=splits.aux_pool,
    )
    return splits


def _refuse_generated_nonmembers(members: Members, nonmembers):
    """Members past the shards are corpus indices from `first` on; no non-member may be one of
    them."""
    mine = np.char.startswith(nonmembers.astype(str), "syn") & np.array(
        [u[3:7] == f"{members.seed:04d}" and sample_index(u) >= members.first for u in nonmembers],
        bool,
    )
    if mine.any():
        raise ValueError(
            f"{int(mine.sum())} non-members (e.g. {list(nonmembers[mine][:3])}) are pairs the "
            "member pool generates past the shards: member and non-member splits must be disjoint"
        )


def _problem(d, sizes, size, corpus, rules, ood, extendable=False) -> str | None:
    """Why these sizes do not fit the drawn split, naming the keys and any de-duplication rule that
    took pairs from the short side; None if they fit."""
    if d is None:
        return f"data.split.holdout={sizes.holdout} leaves no member pool in a corpus of {corpus}"
    if sizes.n > len(d.pool) and not extendable:
        by_rule = d.dropped["member pool"]
        return (
            f"data.size={sizes.n} exceeds the member pool of {len(d.pool)} pairs (corpus {corpus} "
            f"- holdout {sizes.holdout} - {sum(by_rule.values())} dropped by "
            f"de-duplication{_by_rule(by_rule)}); lower data.size or use a larger "
            f"corpus{_fewer_rules(by_rule, rules)}"
        )
    if sizes.need > len(d.nonmembers):
        sides = ["OOD corpus"] if ood else ["held out", "shifted held out"]
        by_rule = {r: sum(d.dropped.get(side, {}).get(r, 0) for side in sides) for r in rules}
        dropped = sum(by_rule.values())
        have = (
            f"the OOD corpus (data.ood_path) holds only {len(d.nonmembers)}"
            if ood
            else f"only {len(d.nonmembers)} are held out"
        )
        after = f" after de-duplication dropped {dropped}{_by_rule(by_rule)}" if dropped else ""
        far = (
            ""
            if ood
            else (
                f", and the far end of the member pool past data.size={sizes.n} holds only "
                f"{max(0, len(d.pool) - sizes.n)} more"
            )
        )
        remedy = (
            "lower those sizes or use a larger OOD corpus"
            if ood
            else "raise data.split.holdout or data.corpus.size, or lower those sizes"
        )
        return (
            f"data.split.eval_size={sizes.k}: the non-member sets need {sizes.need} pairs "
            f"(eval_size {sizes.k} + known_size {sizes.known} + aux_size/2 {sizes.aux // 2}) but "
            f"{have}{after}{far}; {remedy}{_fewer_rules(by_rule, rules)}"
        )
    return None


def _by_rule(by_rule: dict) -> str:
    return (
        " (" + ", ".join(f"{r}: {n}" for r, n in by_rule.items()) + ")"
        if sum(by_rule.values())
        else ""
    )


def _fewer_rules(by_rule: dict, rules) -> str:
    """The remedy of dropping the rule that took the most pairs, when de-duplication took any."""
    if not sum(by_rule.values()):
        return ""
    worst = max(by_rule, key=by_rule.get)
    return f", or set data.split.dedup={dedup.listed(r for r in rules if r != worst)}"


def _fitting(draw, sizes: _Sizes, corpus: int, d, ood: bool) -> _Sizes | None:
    """Sizes that fit the corpus, each checked with a real draw. The non-member sets (eval, known,
    aux) shrink in proportion, by steps of 20%, until they fit; for i.i.d. non-members the holdout
    is set just large enough for them after de-duplication. data.size stays if it fits beside them;
    if it never does, it becomes the member pool left by the largest sets that leave the pool at
    least half the corpus. None if nothing fits."""
    keep = (
        1.0  # the share of held-out pairs de-duplication leaves, as seen at the configured holdout
    )
    if d is not None and not ood:
        keep = max(0.05, len(d.nonmembers) / sizes.holdout)
    fallback, s = None, 1.0
    for _ in range(20):  # down to 1% of the configured sizes
        trial = _scaled(sizes, s)
        got = None
        if ood:
            got = d
        else:
            holdout = _round_up(trial.need / keep * 1.02)
            for _ in range(2):  # de-duplication may take a little more from another holdout
                got = draw(holdout) if holdout < corpus else None
                if got is None or len(got.nonmembers) >= trial.need:
                    break
                holdout = _round_up(holdout + (trial.need - len(got.nonmembers)) / keep)
            trial = replace(trial, holdout=holdout)
        if got is not None and trial.need <= len(got.nonmembers):
            if trial.n <= len(got.pool):
                return trial
            if (
                fallback is None
                and (ood or 2 * trial.holdout <= corpus)
                and _round_down(len(got.pool)) >= 1
            ):
                n = _round_down(len(got.pool))
                fallback = replace(trial, n=n, k=min(trial.k, n))
        s *= 0.8
    return fallback


def _scaled(sizes: _Sizes, s: float) -> _Sizes:
    k = min(sizes.n, max(1, _round_down(sizes.k * s)))
    return replace(
        sizes,
        k=k,
        known=max(1, _round_down(sizes.known * s)),
        aux=max(1, _round_down(sizes.aux * s)),
    )


def _round_down(x: float) -> int:
    """x rounded down to two significant digits (1989 -> 1900), so suggestions read as sizes."""
    x = int(x)
    step = 10 ** max(0, len(str(x)) - 2)
    return x // step * step


def _round_up(x: float) -> int:
    x = int(np.ceil(x))
    step = 10 ** max(0, len(str(x)) - 2)
    return -(-x // step) * step
