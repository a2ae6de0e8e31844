"""What the attack tests share besides fixtures: the planted / null bars, synthetic feature
contexts, and the shadow machinery's null context and synthetic statistics (LiRA and RMIA)."""

import math
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import torch
from omegaconf import OmegaConf

from mia import distributed
from mia.attacks.augment import sample_seed
from mia.attacks.base import AttackContext, AttackResult
from mia.attacks.shadows import References
from mia.data.pairs import to_tensors
from mia.data.splits import EVAL_SETS
from mia.evaluation import metrics
from mia.features import SplitFeatures, extract_features
from mia.job import build_attacks
from mia.model import build_model
from mia.training.shadows import ShadowSettings, ShadowTrainer, halves, train_references
from tests.helpers.config import compose_config

NUM_SHADOWS = 8  # the shadows of tests/attacks/test_lira.py and test_rmia.py (one set serves both)


# --- the bars every attack is held to ---------------------------------------------------------


def auc_of(result, n_bootstrap=200):
    scores = np.concatenate([result.member_scores, result.nonmember_scores])
    labels = np.r_[np.ones(len(result.member_scores)), np.zeros(len(result.nonmember_scores))]
    return metrics.roc_metrics(scores, labels, n_bootstrap=n_bootstrap, seed=0)


def assert_planted(result):
    m = auc_of(result)
    assert m["auc"] > 0.9, f"planted fixture: AUC {m['auc']:.3f} <= 0.9"


def assert_null(result):
    m = auc_of(result)
    lo, hi = m["auc_ci95"]
    assert lo <= 0.5 <= hi, (
        f"null fixture: AUC {m['auc']:.3f}, 95% CI [{lo:.3f}, {hi:.3f}] excludes 0.5"
    )


# --- contexts ---------------------------------------------------------------------------------


def _features(rng, n, d, align):
    """Unit image / text embeddings whose cosine grows with `align` (per row)."""
    img = rng.normal(size=(n, d))
    txt = align[:, None] * img + rng.normal(size=(n, d))
    img /= np.linalg.norm(img, axis=1, keepdims=True)
    txt /= np.linalg.norm(txt, axis=1, keepdims=True)
    return img.astype(np.float32), txt.astype(np.float32)


class FeatureSplits:
    """The splits of a context built from features alone: each evaluation set's uids, and which
    aux_pool pairs are true members."""

    def __init__(self, features, aux_is_member):
        for name in EVAL_SETS:
            setattr(self, name, features[name].uids)
        self.aux_is_member = aux_is_member


def feature_context(planted: bool, n=300, n_known=600, n_aux=600, d=32, seed=0):
    """Members' pairs are better aligned than non-members' when planted; identical otherwise."""
    rng = np.random.default_rng(seed)
    member_align = 1.2 if planted else 0.6
    sizes = {"member_eval": n, "nonmember_eval": n, "nonmember_known": n_known, "aux_pool": n_aux}
    aux_is_member = np.arange(n_aux) % 2 == 0
    feats = {}
    for name, size in sizes.items():
        if name == "member_eval":
            align = np.full(size, member_align)
        elif name == "aux_pool":
            align = np.where(aux_is_member, member_align, 0.6)
        else:
            align = np.full(size, 0.6)
        align = align + rng.normal(scale=0.1, size=size)
        img, txt = _features(rng, size, d, align)
        feats[name] = SplitFeatures(
            np.array([f"{name}{i}" for i in range(size)]), img, txt, (img * txt).sum(1)
        )
    return AttackContext(
        features=feats, splits=FeatureSplits(feats, aux_is_member), target=None, seed=seed
    )


def with_logit_scale(ctx, scale=1 / 0.07):
    """A feature context's target, as far as gradnorm reads it: a model with a logit_scale."""
    model = SimpleNamespace(logit_scale=torch.tensor(math.log(scale)))
    return replace(ctx, target=SimpleNamespace(model=model))


def shifted_members(ctx, delta=0.6, seed=1):
    """Move every true member's (member_eval, member half of aux_pool) embeddings by delta along one
    random unit direction, renormalise, recompute cosines (why: tests/attacks/test_wsa.py)."""
    d = ctx.features["member_eval"].image.shape[1]
    u = np.random.default_rng(seed).normal(size=d)
    u /= np.linalg.norm(u)
    is_member = {"member_eval": True, "aux_pool": ctx.splits.aux_is_member}
    for name, sf in ctx.features.items():
        rows = np.broadcast_to(is_member.get(name, False), len(sf.uids))
        img, txt = sf.image + delta * u * rows[:, None], sf.text + delta * u * rows[:, None]
        img /= np.linalg.norm(img, axis=1, keepdims=True)
        txt /= np.linalg.norm(txt, axis=1, keepdims=True)
        ctx.features[name] = SplitFeatures(
            sf.uids,
            img.astype(np.float32),
            txt.astype(np.float32),
            (img * txt).sum(1).astype(np.float32),
        )
    return ctx


# The shadow trainer of each trained target's contexts, by the target's key (model_context)
TRAINERS = {}


def model_context(cfg, members, splits, target, spec):
    """The context of a trained target: its features on the given splits; shadows train like it
    (with_references)."""
    features, _ = extract_features(
        target, splits, members, members, distributed.single(cfg.trainer)
    )
    TRAINERS[target.key] = ShadowTrainer(spec, members.shards, cfg.paths.cache_dir, target.key)
    return AttackContext(
        features=features,
        splits=splits,
        target=target,
        shards=members.shards,
        seed=cfg.seed,
    )


def trainer_of(ctx) -> ShadowTrainer:
    """The shadow trainer of a model_context's target."""
    return TRAINERS[ctx.target.key]


def with_references(ctx, *wanted, trainer=None):
    """ctx with the reference models of `wanted` trained (or loaded from the cache) over its pool,
    as a job's training stage trains them: attacks, or (num_shadows, ShadowSettings | None) pairs
    (None: shadows.size=pool, as mia.attacks.shadows.references defaults)."""
    attacks = [
        w
        if not isinstance(w, tuple)
        else SimpleNamespace(
            needs_shadows=True,
            num_shadows=w[0],
            shadows=w[1] or ShadowSettings("pool", None, 0),
        )
        for w in wanted
    ]
    found = train_references(
        attacks, trainer or trainer_of(ctx), ctx.features, ctx.seed, ctx.target.size
    )
    return replace(ctx, references={**ctx.references, **found})


def run_with_shadows(attack, ctx):
    """`attack`'s result on ctx, its reference models trained first (with_references)."""
    return attack.run(with_references(ctx, attack))


def make_attack(name: str, **overrides):
    """The attack conf/attack/<name>.yaml configures (its settings live only there), with overrides
    merged key by key, built as a job builds it: mia.job.build_attacks, which instantiates with
    _convert_="all" (the attack gets plain dicts and lists) and names a bad key
    attack.<name>.<key>."""
    cfg = compose_config(f"attack={name}")  # composed: conf/attack/<name>.yaml has defaults
    root = OmegaConf.create(
        {
            # a plain copy (not Hydra's struct node), so that a bad key reaches build_attacks
            "attack": {name: OmegaConf.merge(OmegaConf.to_container(cfg.attack[name]), overrides)},
            "shadows": cfg.shadows,
        }
    )
    return build_attacks(root.attack)[name]


# --- shadows (LiRA, RMIA) ---------------------------------------------------------------------


def pool_null_context(ctx: AttackContext, seed: int = 0) -> AttackContext:
    """A null context whose reference pool holds the same uids as ctx's (see test_lira.py's
    docstring)."""
    s = ctx.splits
    aux = ctx.features["aux_pool"]
    non = np.concatenate([ctx.uids("nonmember_eval"), aux.uids[~s.aux_is_member]])
    non = np.random.default_rng(seed).permutation(non)
    half = len(non) // 2
    sets = {
        "member_eval": non[:half],
        "nonmember_eval": non[half:],
        "nonmember_known": ctx.uids("nonmember_known"),
        "aux_pool": np.concatenate([aux.uids[s.aux_is_member], ctx.uids("member_eval")]),
    }
    rows = {}
    for name in EVAL_SETS:
        f = ctx.features[name]
        rows.update({u: (f, i) for i, u in enumerate(f.uids)})

    def gather(uids):
        parts = [rows[u] for u in uids]
        image = np.stack([f.image[i] for f, i in parts])
        text = np.stack([f.text[i] for f, i in parts])
        return SplitFeatures(np.asarray(uids), image, text, (image * text).sum(1))

    features = {name: gather(uids) for name, uids in sets.items()}
    splits = replace(s, **sets, aux_is_member=np.ones(len(sets["aux_pool"]), bool))
    return AttackContext(
        features=features,
        splits=splits,
        target=ctx.target,
        shards=ctx.shards,
        seed=ctx.seed,
    )


def synthetic_references(planted: bool, num_shadows: int = 8, seed: int = 0) -> References:
    """Statistics as LiRA and RMIA see them, without models: s = difficulty + shift * trained +
    noise."""
    rng = np.random.default_rng(seed)
    sizes = {"member_eval": 200, "nonmember_eval": 200, "nonmember_known": 300, "aux_pool": 300}
    offsets, start = {}, 0
    for name in EVAL_SETS:
        offsets[name] = slice(start, start + sizes[name])
        start += sizes[name]
    uids = np.array([f"pair{i}" for i in range(start)])
    inside = halves(uids, num_shadows, seed)
    difficulty = rng.normal(-1.0, 1.5, start)  # shared by every model: easy pairs are easy for all
    member = np.zeros(start, bool)
    member[offsets["member_eval"]] = planted
    member[offsets["aux_pool"]] = rng.random(sizes["aux_pool"]) < 0.5
    shadows = difficulty + 1.0 * inside + rng.normal(0, 0.3, inside.shape)
    target = difficulty + 1.0 * member + rng.normal(0, 0.3, start)
    return References(uids, offsets, inside, shadows, target, [], [], 0, "synthetic")


def result_of(ref, scores):
    n = ref.offsets["member_eval"].stop
    return AttackResult(scores[:n], scores[n:])


# --- one-modality attacks (imgagree, txtagree) --------------------------------------------------


class _BagTowers:
    """Stand-in towers whose behaviour is known: the image tower a fixed random projection of the
    pixels, the text tower a fixed random projection of the caption's bag of tokens."""

    def __init__(self, seed=0, d=64, pixels=3 * 16 * 16, vocab=49408):
        import torch

        g = torch.Generator().manual_seed(seed)
        self.w_img, self.w_txt = (
            torch.randn(pixels, d, generator=g),
            torch.randn(vocab, d, generator=g),
        )
        self._p = torch.nn.Parameter(torch.zeros(1))

    def parameters(self):
        yield self._p

    def encode_image(self, x, normalize=True):
        import torch.nn.functional as F

        return F.normalize(x.flatten(1) @ self.w_img, dim=1)

    def encode_text(self, tokens, normalize=True):
        import torch
        import torch.nn.functional as F

        bag = torch.zeros(len(tokens), self.w_txt.shape[0]).scatter_add_(
            1, tokens, torch.ones(tokens.shape)
        )
        bag[:, 0] = 0  # padding
        return F.normalize(bag @ self.w_txt, dim=1)


def modality_context(planted: bool, n=100, seed=0) -> AttackContext:
    """Pairs whose one-modality agreement is planted: a smooth image (a colour and a gentle
    gradient) hardly moves under a small translation, a noise image moves entirely; a caption of one
    repeated word has the same bag of words under any dropout or swap, a caption of distinct words
    does not. Planted: members get the stable kind; null: both sets get one random mix of the two
    kinds."""
    from types import SimpleNamespace

    import open_clip
    import torch
    from PIL import Image
    from torchvision.transforms import functional as TF

    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(200)]

    def pair(stable):
        if stable:
            ramp = np.linspace(0, 60, 16)[None, :, None]
            img = np.clip(rng.integers(40, 200, 3)[None, None, :] + ramp, 0, 255)
            return Image.fromarray(np.broadcast_to(img, (16, 16, 3)).astype(np.uint8)), " ".join(
                [rng.choice(words)] * 8
            )
        return (
            Image.fromarray(rng.integers(0, 256, (16, 16, 3)).astype(np.uint8)),
            " ".join(rng.choice(words, 8, replace=False)),
        )

    towers = _BagTowers(seed)
    tokenizer = open_clip.SimpleTokenizer(context_length=32)
    target = SimpleNamespace(model=towers, tokenizer=tokenizer, preprocess=TF.to_tensor)
    kinds = (
        {"member_eval": np.ones(n, bool), "nonmember_eval": np.zeros(n, bool)}
        if planted
        else {s: rng.random(n) < 0.5 for s in ("member_eval", "nonmember_eval")}
    )
    features, raw = {}, {}
    for name, stable in kinds.items():
        images, captions = zip(*[pair(k) for k in stable], strict=True)
        with torch.no_grad():
            img = towers.encode_image(torch.stack([TF.to_tensor(im) for im in images])).numpy()
            txt = towers.encode_text(tokenizer(list(captions))).numpy()
        features[name] = SplitFeatures(
            np.array([f"{name}{i}" for i in range(n)]), img, txt, (img * txt).sum(1)
        )
        raw[name] = (list(images), list(captions))
    return AttackContext(features=features, splits=None, target=target, seed=seed, _raw=raw)


# --- label-blind scoring (tests/attacks/test_label_blind.py) -----------------------------------


def untrained_model_context(n_eval=40, n_known=100, n_aux=100, seed=0) -> AttackContext:
    """Every evaluation set, with raw pairs, features and a real (untrained) tiny CLIP
    (conf/model/tiny.yaml): random images and captions of a small vocabulary, so every attack runs
    on it in seconds. Label-blindness needs no memorisation, only a score for each pair."""
    import torch
    from PIL import Image

    cfg = compose_config("logger=none")
    torch.manual_seed(seed)
    model, tokenizer, preprocess = build_model(cfg.model)
    model.eval()
    rng = np.random.default_rng(seed)
    side, words = cfg.data.corpus.image_size, [f"w{i}" for i in range(40)]
    sizes = {
        "member_eval": n_eval,
        "nonmember_eval": n_eval,
        "nonmember_known": n_known,
        "aux_pool": n_aux,
    }
    features, raw = {}, {}
    for k, (name, size) in enumerate(sizes.items()):
        images = [
            Image.fromarray(rng.integers(0, 256, (side, side, 3)).astype(np.uint8))
            for _ in range(size)
        ]
        captions = [" ".join(rng.choice(words, int(rng.integers(4, 9)))) for _ in range(size)]
        img_t, tok = to_tensors(images, captions, preprocess, tokenizer)
        with torch.no_grad():
            img = model.encode_image(img_t, normalize=True).numpy()
            txt = model.encode_text(tok, normalize=True).numpy()
        # uids interleave across sets, so that sorting them mixes the sets
        uids = np.array([f"pair{i:04d}.{k}" for i in rng.permutation(size)])
        features[name] = SplitFeatures(uids, img, txt, (img * txt).sum(1))
        raw[name] = (images, captions)
    splits = FeatureSplits(features, np.arange(n_aux) % 2 == 0)
    target = SimpleNamespace(
        model=model, tokenizer=tokenizer, preprocess=preprocess, key="untrained"
    )
    return AttackContext(features=features, splits=splits, target=target, seed=seed, _raw=raw)


def relabelled(ctx: AttackContext, moved: float = 1.0) -> AttackContext:
    """The same pairs with the evaluation labels changed: the last `moved` share of member_eval and
    of nonmember_eval cross over to the other set (1.0: the two sets exchange places; 0.5: half of
    each moves, so every set is regrouped). What an attack that never looks at the labels cannot
    tell from ctx. Compare scores by uid (scores_by_uid)."""
    a, b = "member_eval", "nonmember_eval"
    fa, fb = ctx.features[a], ctx.features[b]
    ka, kb = len(fa.uids) - round(moved * len(fa.uids)), len(fb.uids) - round(moved * len(fb.uids))

    def join(f, g, k, m):  # f's first k pairs, then g's pairs from m on
        return SplitFeatures(
            *(
                np.concatenate([x[:k], y[m:]])
                for x, y in zip(
                    (f.uids, f.image, f.text, f.cos), (g.uids, g.image, g.text, g.cos), strict=True
                )
            )
        )

    features = {**ctx.features, a: join(fa, fb, ka, kb), b: join(fb, fa, kb, ka)}
    raw = dict(ctx._raw)
    if a in raw and b in raw:
        (ia, ca), (ib, cb) = ctx._raw[a], ctx._raw[b]
        raw[a] = (list(ia[:ka]) + list(ib[kb:]), list(ca[:ka]) + list(cb[kb:]))
        raw[b] = (list(ib[:kb]) + list(ia[ka:]), list(cb[:kb]) + list(ca[ka:]))
    return replace(
        ctx, features=features, splits=FeatureSplits(features, ctx.splits.aux_is_member), _raw=raw
    )


def scores_by_uid(ctx: AttackContext, result) -> dict:
    return dict(
        zip(
            np.r_[ctx.uids("member_eval"), ctx.uids("nonmember_eval")],
            np.r_[result.member_scores, result.nonmember_scores],
            strict=True,
        )
    )


# --- today's paths, kept as the references the faster ones must equal bit for bit --------------


def pil_image_views(
    ctx, set_name: str, transform, tag: str, repeats: int, batch_size: int
) -> np.ndarray:
    """mia.attacks.augment.image_views with every view made by PIL, as before its tensor path for
    translations (tests/attacks/test_augment.py, test_imgagree.py)."""
    import torch

    model = ctx.target.model
    device = next(model.parameters()).device
    uids = ctx.uids(set_name)
    images, _ = ctx.pairs(set_name)
    out = []
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        for r in range(repeats):
            emb = []
            for i in range(0, len(images), batch_size):
                batch = []
                for uid, im in zip(
                    uids[i : i + batch_size], images[i : i + batch_size], strict=True
                ):
                    torch.manual_seed(sample_seed(ctx.seed, uid, tag, r))
                    batch.append(ctx.target.preprocess(transform(im)))
                emb.append(
                    model.encode_image(torch.stack(batch).to(device), normalize=True).float().cpu()
                )
            out.append(torch.cat(emb).numpy())
    return np.stack(out)
