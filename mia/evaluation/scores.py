"""scores.parquet: every scored pair's per-attack score, written beside results.json
(docs/design.md §10.1).

Schema 1 (the parquet file's metadata key `mia.scores.schema_version`). One row per scored
evaluation pair: member_eval, then nonmember_eval, each in the order of its features (mia.features):

    uid      string   the pair's uid
    set      string   member_eval | nonmember_eval (mia.data.splits.SCORED)
    label    int8     1 = member, 0 = non-member
    caption  string   the pair's caption
    cos      float64  the target's image-text cosine, whatever the attacks (the gap is its
                      difference of means)
    <attack> float64  one column per attack, named by its instance name in the `attack` group
                      (csa, wsa_gomez, ...): its score, higher = more likely a member

The columns up to `cos` are always there, in that order; every further column is an attack. A reader
checks the version and refuses a newer file than it knows. Written by mia.pipeline, read by the
sweep report (which recomputes every metric from it) and by anyone combining attacks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mia.cache import atomic
from mia.data.splits import MEMBER_EVAL, NONMEMBER_EVAL, SCORED

SCHEMA_VERSION = 1
FILENAME = "scores.parquet"
FIXED = ("uid", "set", "label", "caption", "cos")
EXPOSURE = "exposure"  # added by most_exposed: no attack may take this name either
# The metadata key of docs/design.md §10.1 (a data format: it keeps its name whatever the module's)
_VERSION_KEY = b"mia.scores.schema_version"


def check_aligned(name: str, member_scores, nonmember_scores, sizes: dict):
    """Refuse an attack whose score arrays are not one score per pair of each scored set. `sizes` is
    {set name: number of pairs}; the order within a set is the features' by contract
    (AttackResult)."""
    for set_name, got in ((MEMBER_EVAL, member_scores), (NONMEMBER_EVAL, nonmember_scores)):
        if np.ndim(got) != 1 or len(got) != sizes[set_name]:
            raise ValueError(
                f"attack.{name}: {np.shape(got)} scores for the {sizes[set_name]} pairs of "
                f"{set_name}; an attack must return one score per pair, in the features' order"
            )


def frame(features: dict, captions: dict, attack_scores: dict) -> pd.DataFrame:
    """The table of this module's docstring. `features` is {set name: SplitFeatures} (uids, cos),
    `captions` {set name: captions in the features' order}, `attack_scores` {attack: (member scores,
    non-member scores)} in the order the attacks ran."""
    sizes = {s: len(features[s].uids) for s in SCORED}
    for s in SCORED:
        if len(captions[s]) != sizes[s]:
            raise ValueError(f"{len(captions[s])} captions for the {sizes[s]} pairs of {s}")
    columns = {
        "uid": np.concatenate([np.asarray(features[s].uids, dtype=str) for s in SCORED]).astype(
            object
        ),
        "set": np.repeat(np.array(SCORED, dtype=object), [sizes[s] for s in SCORED]),
        "label": np.repeat(np.array([1, 0], dtype=np.int8), [sizes[s] for s in SCORED]),
        "caption": np.array([str(c) for s in SCORED for c in captions[s]], dtype=object),
        "cos": np.concatenate([np.asarray(features[s].cos, dtype=np.float64) for s in SCORED]),
    }
    for name, (member, nonmember) in attack_scores.items():
        if name in FIXED or name == EXPOSURE:
            raise ValueError(
                f"attack.{name}: the name is a fixed column of {FILENAME}; rename the attack "
                f"(names taken: {', '.join(FIXED + (EXPOSURE,))})"
            )
        check_aligned(name, member, nonmember, sizes)
        columns[name] = np.concatenate(
            [np.asarray(member, dtype=np.float64), np.asarray(nonmember, dtype=np.float64)]
        )
    return pd.DataFrame(columns)


def _schema(df: pd.DataFrame):
    import pyarrow as pa

    types = {
        "uid": pa.string(),
        "set": pa.string(),
        "label": pa.int8(),
        "caption": pa.string(),
        "cos": pa.float64(),
    }
    return pa.schema([(c, types.get(c, pa.float64())) for c in df.columns])


def write(path: Path, df: pd.DataFrame) -> Path:
    """Write `df` (from `frame`) atomically, with the schema's exact column types and version."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if tuple(df.columns[: len(FIXED)]) != FIXED:
        raise ValueError(
            f"{path}: the first columns must be {list(FIXED)}, got {list(df.columns[: len(FIXED)])}"
        )
    table = pa.Table.from_pandas(df, schema=_schema(df), preserve_index=False)
    table = table.replace_schema_metadata(
        {**(table.schema.metadata or {}), _VERSION_KEY: str(SCHEMA_VERSION).encode()}
    )
    with atomic(path) as tmp:
        pq.write_table(table, tmp)
    return Path(path)


def load(path) -> pd.DataFrame:
    """The table of a scores.parquet, checked against the schema; string columns come back as
    object."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    metadata = table.schema.metadata or {}
    version = metadata.get(_VERSION_KEY)
    if version is None:
        raise ValueError(
            f"{path}: no {_VERSION_KEY.decode()} in its metadata; not a mia scores file"
        )
    if int(version) > SCHEMA_VERSION:
        raise ValueError(
            f"{path}: scores schema {int(version)}, newer than this code's {SCHEMA_VERSION}; "
            "update mia"
        )
    if tuple(table.column_names[: len(FIXED)]) != FIXED:
        raise ValueError(
            f"{path}: the first columns must be {list(FIXED)}, got "
            f"{table.column_names[: len(FIXED)]}"
        )
    return table.to_pandas()


def attack_columns(df: pd.DataFrame) -> list[str]:
    """The attacks' score columns, in the order the attacks ran."""
    return [c for c in df.columns if c not in FIXED and c != EXPOSURE]


def exposure(df: pd.DataFrame) -> np.ndarray:
    """Each pair's exposure: the mean over attacks of its score's percentile among all scored pairs
    (average rank / n, ties share their rank). Percentiles put attacks of any score scale on one
    footing; with one attack the order is that attack's own. 1 = every attack ranks it first."""
    names = attack_columns(df)
    if not names:
        raise ValueError("no attack columns: nothing to rank the pairs by")
    return np.mean([df[c].rank(method="average").to_numpy() / len(df) for c in names], axis=0)


def most_exposed(df: pd.DataFrame, k: int = 50) -> pd.DataFrame:
    """The k member_eval pairs of highest exposure (see `exposure`), highest first, with an
    `exposure` column; ties keep the table's order. Non-members are ranked against, never
    returned."""
    value = exposure(df)
    members = np.flatnonzero(df["label"].to_numpy() == 1)
    top = members[np.argsort(-value[members], kind="stable")[:k]]
    return df.iloc[top].assign(**{EXPOSURE: value[top]}).reset_index(drop=True)
