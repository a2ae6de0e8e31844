"""Reading uid lists (to narrow a shard folder to a subset) in the three forms they come in.

- `.npy`, DataComp's own form. DataComp's baselines (`baselines/apply_filter.py` in
  mlfoundations/datacomp) turn each 32-hex-digit `uid` of the parquet metadata into two unsigned
  64-bit integers, `(int(uid[:16], 16), int(uid[16:32], 16))`, collect them in a 1-D structured
  array of dtype `np.dtype("u8,u8")` (fields `f0` = high 64 bits, `f1` = low 64 bits), sort it and
  `np.save` it (the README's subset-file format; its resharder also takes the same pairs as a
  headerless `np.memmap` file, read here too when the NumPy magic is missing). Read back, each pair
  is the lowercase string `f"{f0:016x}{f1:016x}"`, exactly the parquet `uid`. A plain `(n, 2)`
  unsigned integer array in the same order is read the same way, and a 1-D array of strings as is.
- `.txt`: one uid per line; surrounding whitespace and blank lines are ignored.
- `.parquet`: the `uid` column.

Every error names the config key the path came from and the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# Two lowercase hex digits of every byte value: turns big-endian bytes into hex without a Python
# loop.
_HEX_PAIRS = np.array([f"{b:02x}".encode() for b in range(256)], dtype="S2")


def pairs_to_hex(high: np.ndarray, low: np.ndarray) -> np.ndarray:
    """The 32-hex-digit lowercase uids of 128-bit values given as high and low uint64 halves."""
    raw = np.stack([np.asarray(high, np.uint64), np.asarray(low, np.uint64)], axis=1).astype(">u8")
    digits = _HEX_PAIRS[raw.view(np.uint8).reshape(len(raw), 16)]  # (n, 16) two-digit chunks
    return np.ascontiguousarray(digits).view("S32").ravel().astype("U32")


def _from_npy(path: Path, where: str) -> np.ndarray:
    with open(path, "rb") as f:
        has_header = f.read(6) == b"\x93NUMPY"
    if not has_header:  # DataComp's headerless memmap of (high, low) pairs
        if path.stat().st_size % 16:
            raise ValueError(
                f"{where}: neither a .npy file nor a memmap of uint64 pairs "
                f"({path.stat().st_size} bytes is not a multiple of 16)"
            )
        arr = np.fromfile(path, dtype=np.dtype("u8,u8"))
        return pairs_to_hex(arr["f0"], arr["f1"])
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as err:
        raise ValueError(
            f"{where}: not a readable .npy file ({type(err).__name__}: {err})"
        ) from err
    names = arr.dtype.names
    if (
        names is not None
        and len(names) == 2
        and all(arr.dtype[n].kind == "u" for n in names)
        and arr.ndim == 1
    ):
        return pairs_to_hex(arr[names[0]], arr[names[1]])
    if arr.dtype.kind == "u" and arr.ndim == 2 and arr.shape[1] == 2:
        return pairs_to_hex(arr[:, 0], arr[:, 1])
    if arr.dtype.kind in "US" and arr.ndim == 1:
        return arr.astype(str)
    raise ValueError(
        f"{where}: dtype {arr.dtype} shape {arr.shape} is not a uid list; expected DataComp's "
        "structured uint64 pairs (np.dtype('u8,u8')), an (n, 2) uint64 array or 1-D strings"
    )


def _from_parquet(path: Path, where: str) -> np.ndarray:
    import pyarrow.parquet as pq

    try:
        columns = pq.read_schema(path).names
    except Exception as err:
        raise ValueError(
            f"{where}: not a readable parquet file ({type(err).__name__}: {err})"
        ) from err
    if "uid" not in columns:
        raise ValueError(f"{where}: no 'uid' column (columns: {columns})")
    column = pq.read_table(path, columns=["uid"]).column("uid")
    if column.null_count:
        raise ValueError(f"{where}: {column.null_count} rows have no uid")
    return np.array(column.to_pylist(), dtype=str)


def read_uids(path, key: str) -> np.ndarray:
    """The uids listed in `path` (.npy, .txt or .parquet) as a numpy array of str, in file order.
    `key` is the config key `path` came from (e.g. "data.members_uids"); errors name it."""
    path = Path(path)
    where = f"{key}={str(path)!r}"
    if not path.is_file():
        raise FileNotFoundError(f"{where}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        uids = _from_npy(path, where)
    elif suffix == ".parquet":
        uids = _from_parquet(path, where)
    elif suffix == ".txt":
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as err:
            raise ValueError(f"{where}: not UTF-8 text ({err})") from err
        uids = np.array([s for s in (line.strip() for line in lines) if s], dtype=str)
    else:
        raise ValueError(
            f"{where}: unknown uid list format {path.suffix!r}; use .npy (DataComp uint64 "
            "pairs), .txt (one uid per line) or .parquet (a 'uid' column)"
        )
    if len(uids) == 0:
        raise ValueError(f"{where}: holds no uids")
    return uids
