"""What a target is worth (docs/design.md §11.1): zero-shot retrieval on held-out pairs and, on the
embedded corpus, zero-shot classification of the generator's attributes. A target that learned
nothing leaks nothing, so every audit reports these beside its attacks.

Both read the released embeddings (the feature store after the defense's `release`), so an
output-perturbation defense costs utility exactly as it costs the attacks.
"""

from __future__ import annotations

import re

import numpy as np
import torch

from mia.data import synthetic
from mia.data.splits import NONMEMBER_EVAL, NONMEMBER_KNOWN

KS = (1, 5, 10)
RETRIEVAL_POOL = NONMEMBER_EVAL  # the fixed candidate pool: held-out, scored by every attack
ATTRIBUTE_SETS = (
    NONMEMBER_EVAL,
    NONMEMBER_KNOWN,
)  # held-out pairs whose captions name their attributes
COLOURS, SHAPES, SIZES = tuple(synthetic.COLOURS["iid"]), synthetic.SHAPES, tuple(synthetic.SIZES)
# The caption grammar's first object: "a {size} {colour} {shape} on the {pos}"
# (mia/data/synthetic.py)
_FIRST = re.compile(
    rf"^a ({'|'.join(SIZES)}) ({'|'.join(COLOURS)}) ({'|'.join(SHAPES)}) (?:on|in) the "
)
# The caption grammar's own words for one object, nothing else (mia/data/synthetic.py)
PROMPT = "a {size} {colour} {shape} {prep} the {pos} on a {bg} background"
POSITIONS = tuple(
    synthetic.position_name(r, c)
    for r in range(len(synthetic.ROWS))
    for c in range(len(synthetic.COLS))
)


def prompts() -> tuple[list[str], np.ndarray]:
    """Every (size, colour, shape, position) once, each with one background colour other than the
    object's (rotated, so every background occurs about equally); and each prompt's (colour,
    shape)."""
    out, labels = [], []
    for s in SIZES:
        for ci, c in enumerate(COLOURS):
            for hi, h in enumerate(SHAPES):
                for pi, pos in enumerate(POSITIONS):
                    bg = COLOURS[(ci + 1 + (pi + hi) % (len(COLOURS) - 1)) % len(COLOURS)]
                    out.append(
                        PROMPT.format(
                            size=s,
                            colour=c,
                            shape=h,
                            prep="in" if pos == "center" else "on",
                            pos=pos,
                            bg=bg,
                        )
                    )
                    labels.append((ci, hi))
    return out, np.array(labels)


def recall_at_k(image: np.ndarray, text: np.ndarray, ks=KS) -> dict:
    """Recall@k both ways over the pool of n pairs (row i's partner is row i), and chance k/n.
    A tie with the partner counts against it, so a constant model scores 0, not 1."""
    sims = image.astype(np.float64) @ text.astype(np.float64).T
    diag = np.diag(sims)
    i2t_rank = (sims >= diag[:, None]).sum(1) - 1  # captions scoring at least the partner's
    t2i_rank = (sims >= diag[None, :]).sum(0) - 1  # images scoring at least the partner's
    n = len(diag)
    out = {"pool": RETRIEVAL_POOL, "pool_size": n}
    for k in ks:
        out[f"i2t_r{k}"] = float((i2t_rank < k).mean())
        out[f"t2i_r{k}"] = float((t2i_rank < k).mean())
        out[f"chance_r{k}"] = min(1.0, k / n)
    return out


def parse_attributes(caption: str):
    """(colour, shape) of a one-object i.i.d. caption; None for two objects (the label would not say
    which one a prompt should match) or any other grammar (shifted, glyphs, web captions)."""
    scene = caption.split(" background")[0]
    m = _FIRST.match(caption)
    if m is None or " and a " in scene:
        return None
    return m.group(2), m.group(3)


@torch.no_grad()
def class_embeddings(model, tokenizer, release=None) -> dict:
    """{attribute: [classes, d]}: each class's prompts, over the other attributes, averaged (CLIP's
    prompt ensembling) and normalised. `release` perturbs the text embeddings as the defense
    releases them (keyed by prompt, so a prompt always gets the same answer)."""
    texts, labels = prompts()
    device = next(model.parameters()).device
    emb = np.concatenate(
        [
            model.encode_text(tokenizer(texts[i : i + 512]).to(device), normalize=True)
            .float()
            .cpu()
            .numpy()
            for i in range(0, len(texts), 512)
        ]
    )
    if release is not None:
        emb = release(emb, [f"prompt:{p}" for p in texts])
    out = {
        "colour": np.stack([emb[labels[:, 0] == i].mean(0) for i in range(len(COLOURS))]),
        "shape": np.stack([emb[labels[:, 1] == i].mean(0) for i in range(len(SHAPES))]),
    }
    return {k: v / np.linalg.norm(v, axis=1, keepdims=True) for k, v in out.items()}


def attribute_accuracy(image: np.ndarray, labels: list, classes: dict) -> dict:
    """Top-1 zero-shot accuracy of colour and shape, with chance (1 / classes) and the
    majority-class rate of the evaluated images beside it."""
    out = {"n_images": len(labels)}
    for j, (attribute, names) in enumerate((("colour", COLOURS), ("shape", SHAPES))):
        truth = np.array([names.index(lab[j]) for lab in labels])
        pred = (image @ classes[attribute].T).argmax(1)
        out[f"{attribute}_acc"] = float((pred == truth).mean())
        out[f"{attribute}_chance"] = 1 / len(names)
        out[f"{attribute}_majority"] = float(
            np.bincount(truth, minlength=len(names)).max() / len(truth)
        )
    return out


def measure(features: dict, captions: dict | None, model, tokenizer, release=None) -> dict:
    """The target's utility: retrieval on the pool always; attributes where `captions` ({set:
    captions}) are given and at least one parses (the embedded corpus' i.i.d. grammar), else
    None."""
    pool = features[RETRIEVAL_POOL]
    out = {"retrieval": recall_at_k(pool.image, pool.text), "attributes": None}
    if captions:
        rows = [
            (name, i, parse_attributes(c))
            for name in ATTRIBUTE_SETS
            for i, c in enumerate(captions[name])
        ]
        rows = [r for r in rows if r[2] is not None]
        if rows:
            image = np.stack([features[name].image[i] for name, i, _ in rows])
            model.eval()
            out["attributes"] = {
                "sets": list(ATTRIBUTE_SETS),
                "prompt": PROMPT,
                **attribute_accuracy(
                    image, [r[2] for r in rows], class_embeddings(model, tokenizer, release)
                ),
            }
    return out


def summary(utility: dict) -> dict:
    """Flat scalars for W&B and the sweep report: utility/<key>."""
    flat = {
        f"utility/{k}": v for k, v in utility["retrieval"].items() if isinstance(v, (int, float))
    }
    flat.update(
        {
            f"utility/{k}": v
            for k, v in (utility.get("attributes") or {}).items()
            if isinstance(v, (int, float))
        }
    )
    return flat
