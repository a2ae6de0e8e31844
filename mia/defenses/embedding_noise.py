"""Output perturbation: the target answers every query with its L2-normalised embedding plus
Gaussian noise of `std` per coordinate, normalised again. The noise is a function of the query
(seed and key), so asking twice gives the same answer. The weights are untouched: the target's
cache key stays the undefended one, and attacks that run the model themselves (aea, mcd, paramgrad,
and the shadow models of lira / rmia) see no noise (docs/design.md §11.4)."""

from __future__ import annotations

import numpy as np

from mia.defenses.base import Defense, check, keyed_normal
from mia.validate import is_int, is_number


class EmbeddingNoise(Defense):
    name = "embedding_noise"
    strength = ("std",)
    releases = True

    def __init__(self, std: float, seed: int):
        check("std", std, is_number(std) and std >= 0, "a number >= 0")
        check("seed", seed, is_int(seed) and seed >= 0, "an integer >= 0")
        super().__init__(std=std, seed=seed)

    def release(self, embeddings: np.ndarray, keys: list[str]) -> np.ndarray:
        if len(keys) != len(embeddings):
            raise ValueError(f"{len(keys)} keys for {len(embeddings)} embeddings")
        d = embeddings.shape[1]
        noise = (
            np.stack([keyed_normal(self.settings["seed"], k, d) for k in keys]) if len(keys) else 0
        )
        out = embeddings + self.settings["std"] * noise
        return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(embeddings.dtype)
