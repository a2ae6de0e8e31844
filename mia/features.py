"""Image embedding, text embedding and cosine for every evaluation set, computed once per target
and cached by uid: every attack reads the same store instead of re-running the model."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from mia.cache import Layout, atomic, config_hash, get_or_build
from mia.data.pairs import load_pairs
from mia.data.splits import EVAL_SETS

log = logging.getLogger(__name__)


@dataclass
class SplitFeatures:
    uids: np.ndarray
    image: np.ndarray  # L2-normalised image embeddings, [n, d]
    text: np.ndarray  # L2-normalised text embeddings, [n, d]
    cos: np.ndarray  # cosine similarity of each pair, [n]


@torch.no_grad()
def embed(model, images, tokens, batch_size=512, desc="features"):
    device = next(model.parameters()).device
    img, txt = [], []
    for i in tqdm(range(0, len(images), batch_size), desc=desc, unit="batch"):
        img.append(
            model.encode_image(images[i : i + batch_size].to(device), normalize=True).float().cpu()
        )
        txt.append(
            model.encode_text(tokens[i : i + batch_size].to(device), normalize=True).float().cpu()
        )
    img, txt = torch.cat(img).numpy(), torch.cat(txt).numpy()
    return img, txt, (img * txt).sum(1)


def _sources(splits, member_corpus, nonmember_corpus):
    """Which corpus each evaluation set's pairs live in."""
    aux_members = splits.aux_pool[splits.aux_is_member]
    aux_nonmembers = splits.aux_pool[~splits.aux_is_member]
    from_members = [splits.member_eval, aux_members]
    from_nonmembers = [splits.nonmember_eval, splits.nonmember_known, aux_nonmembers]
    if nonmember_corpus is member_corpus:
        return [(member_corpus, np.concatenate(from_members + from_nonmembers))]
    return [
        (member_corpus, np.concatenate(from_members)),
        (nonmember_corpus, np.concatenate(from_nonmembers)),
    ]


def _embed_sources(target, sources, device, rank=0, world=1):
    """(uids, image, text, cos) for this rank's share (every world-th uid) of every source."""
    uids, img, txt, cos = [], [], [], []
    model = target.model.to(
        device
    )  # where the target stage put it already; it stays there for the attacks
    for corpus, wanted in sources:
        mine = list(wanted[rank::world])
        images, tokens = load_pairs(
            corpus.shards,
            mine,
            target.preprocess,
            target.tokenizer,
            f"load eval pairs ({corpus.name})",
        )
        i, t, c = embed(model, images, tokens)
        uids.append(np.asarray(mine)), img.append(i), txt.append(t), cos.append(c)
    return np.concatenate(uids), np.concatenate(img), np.concatenate(txt), np.concatenate(cos)


def extract_features(target, splits, member_corpus, nonmember_corpus, world):
    """({set name: SplitFeatures}, cache_hit) for every set in EVAL_SETS.

    `world` is the job's mia.distributed.World (its device is where the embedding runs). With
    several ranks every rank embeds a disjoint share; rank 0 gathers the shares,
    de-duplicates them by uid and writes the cache (then only rank 0 gets the sets back)."""
    sources = _sources(splits, member_corpus, nonmember_corpus)
    key = config_hash([[c.fingerprint, list(u)] for c, u in sources])
    path = Layout.features(target.dir, key)

    def build():
        shares = world.gather(_embed_sources(target, sources, world.device, world.rank, world.size))
        if world.is_main:
            uids, img, txt, cos = (np.concatenate(x) for x in zip(*shares, strict=True))
            _, first = np.unique(uids, return_index=True)  # one row per uid (docs/design.md §7.6)
            with atomic(path) as tmp:
                np.savez(tmp, uids=uids[first], image=img[first], text=txt[first], cos=cos[first])

    hit = get_or_build(path, build, world)
    if hit:
        log.info("feature cache hit: %s", path)
    if not world.is_main:
        return None, hit
    with np.load(path) as z:
        row = {u: i for i, u in enumerate(z["uids"])}
        img, txt, cos = z["image"], z["text"], z["cos"]
        out = {}
        for name in EVAL_SETS:
            uids = getattr(splits, name)
            idx = np.array([row[u] for u in uids], dtype=int)
            out[name] = SplitFeatures(uids, img[idx], txt[idx], cos[idx])
    return out, hit


def released(defense, features: dict) -> dict:
    """The feature store as the target releases it under `defense` (mia/defenses/): every set's
    embeddings through `defense.release` (keyed by uid, so a pair's answer is the same in every set
    and job), cosines recomputed."""
    if not defense.releases:
        return features
    out = {}
    for name, f in features.items():
        image = defense.release(f.image, [f"image:{u}" for u in f.uids])
        text = defense.release(f.text, [f"text:{u}" for u in f.uids])
        out[name] = SplitFeatures(f.uids, image, text, (image * text).sum(1))
    return out
