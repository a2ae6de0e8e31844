"""Defenses a target is trained or released with (the `defense` config group, docs/design.md §11).
Each lives in its own module behind mia.defenses.base.Defense; `build` picks one by defense.name."""
from __future__ import annotations

from mia.defenses.augment_image import AugmentImage
from mia.defenses.augment_text import AugmentText
from mia.defenses.base import Defense, NoDefense
from mia.defenses.dp_sgd import DPSGD
from mia.defenses.embedding_noise import EmbeddingNoise

DEFENSES = {d.name: d for d in (NoDefense, AugmentImage, AugmentText, EmbeddingNoise, DPSGD)}
NONE = {"name": "none"}


def build(settings: dict | None) -> Defense:
    """The Defense of a `defense` group as a plain dict (None or {} = none); a bad name or setting is
    refused naming its key, defense.<setting>."""
    settings = dict(settings or NONE)
    name = settings.pop("name", None)
    if name not in DEFENSES:
        raise ValueError(f"defense.name={name!r}: choose one of {sorted(DEFENSES)} (e.g. defense=dp_sgd)")
    cls = DEFENSES[name]
    unknown, missing = set(settings) - cls.setting_names(), cls.setting_names() - set(settings)
    if unknown or missing:
        key = sorted(unknown or missing)[0]
        raise ValueError(f"defense.{key}: {'not a setting' if unknown else 'missing'} of defense={name} "
                         f"(its settings: {sorted(cls.setting_names()) or 'none'})")
    return cls(**settings)
