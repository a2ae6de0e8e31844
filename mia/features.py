"""Image embedding, text embedding and cosine for every evaluation set, computed once per target
and cached by uid: every attack reads the same store instead of re-running the model."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from mia.cache import config_hash, locked
from mia.data.pairs import load_pairs

log = logging.getLogger(__name__)

EVAL_SETS = ("member_eval", "nonmember_eval", "nonmember_known", "aux_pool")


@dataclass
class SplitFeatures:
    uids: np.ndarray
    image: np.ndarray    # L2-normalised image embeddings, [n, d]
    text: np.ndarray     # L2-normalised text embeddings, [n, d]
    cos: np.ndarray      # cosine similarity of each pair, [n]


@torch.no_grad()
def embed(model, images, tokens, batch_size=512, desc="features"):
    device = next(model.parameters()).device
    img, txt = [], []
    for i in tqdm(range(0, len(images), batch_size), desc=desc, unit="batch"):
        img.append(model.encode_image(images[i:i + batch_size].to(device), normalize=True).float().cpu())
        txt.append(model.encode_text(tokens[i:i + batch_size].to(device), normalize=True).float().cpu())
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
    return [(member_corpus, np.concatenate(from_members)), (nonmember_corpus, np.concatenate(from_nonmembers))]


def extract_features(target, splits, member_corpus, nonmember_corpus):
    """({set name: SplitFeatures}, cache_hit) for every set in EVAL_SETS."""
    sources = _sources(splits, member_corpus, nonmember_corpus)
    key = config_hash([[c.fingerprint, list(u)] for c, u in sources])
    path = target.dir / "features" / f"{key}.npz"
    hit = path.exists()
    if not hit:
        with locked(path):
            hit = path.exists()
            if not hit:
                uids, img, txt, cos = [], [], [], []
                for corpus, wanted in sources:
                    images, tokens = load_pairs(corpus.shards, list(wanted), target.preprocess,
                                                target.tokenizer, f"load eval pairs ({corpus.name})")
                    i, t, c = embed(target.model, images, tokens)
                    uids.append(wanted), img.append(i), txt.append(t), cos.append(c)
                tmp = Path(f"{path}.tmp.npz")
                np.savez(tmp, uids=np.concatenate(uids), image=np.concatenate(img),
                         text=np.concatenate(txt), cos=np.concatenate(cos))
                tmp.replace(path)
    if hit:
        log.info("feature cache hit: %s", path)
    with np.load(path) as z:
        row = {u: i for i, u in enumerate(z["uids"])}
        img, txt, cos = z["image"], z["text"], z["cos"]
        out = {}
        for name in EVAL_SETS:
            uids = getattr(splits, name)
            idx = np.array([row[u] for u in uids], dtype=int)
            out[name] = SplitFeatures(uids, img[idx], txt[idx], cos[idx])
    return out, hit
