"""Fetch DataComp metadata as an i.i.d. member / non-member pair of shard folders.

    python -m mia.data.datacomp --metadata <parquet file or folder> --out <dir> [--seed 0]
        [--member-fraction 0.5] [--processes 2] [--threads 16] [--image-size 224] ...

1. Split. A uid is a member iff int.from_bytes(sha256(f"{seed}:{uid}".encode("utf-8")).digest()[:8],
       "big") < int(fraction * 2**64)
   an independent coin per uid: the split is reproducible from that rule and the seed alone (no
   row order, no RNG state), and a uid's side never depends on which other rows are present.
   Written to <out>/split.parquet (uid, side) and <out>/split.json (seed, hash, rule, counts).
2. Fetch. img2dataset downloads each half into <out>/members and <out>/nonmembers as webdataset
   shards (NNNNN.tar with {key}.jpg, {key}.txt, {key}.json). As in DataComp's own
   download_upstream.py: the caption comes from `text`, `save_additional_columns=["uid"]` puts the
   uid in every sample's .json (where mia.data.shards reads it), and faces are blurred from
   `face_bboxes` where the metadata has that column. Unlike it, images are sized for CLIP at 224 px
   by default (DataComp: --resize-mode keep_ratio_largest --image-size 512). The exact img2dataset
   inputs stay in <out>/lists/.
3. Count. Requested, fetched and failed per half (summed from img2dataset's NNNNN_stats.json)
   go to <out>/fetch.json and stdout.

Running the same command again resumes (img2dataset skips shards that have stats); other settings
into the same --out are refused. Nothing but the metadata's URLs is contacted: W&B stays off and
albumentations' PyPI version check (run on import unless NO_ALBUMENTATIONS_UPDATE is set) is off.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import sys
import threading
from collections import Counter
from contextlib import contextmanager
from importlib import metadata as importlib_metadata
from pathlib import Path

import numpy as np

IMG2DATASET_VERSION = (
    "1.47.0"  # the version this recipe is tested with; see docs/datacomp.md to install
)
SIDES = {"member": "members", "nonmember": "nonmembers"}  # side -> shard folder under --out
REQUIRED_COLUMNS = ("uid", "url", "text")
FACE_BOXES = "face_bboxes"  # DataComp's face bounding boxes, blurred as its own downloader does
HASH = "sha256"
RULE = (
    'member iff int.from_bytes(sha256(f"{seed}:{uid}".encode("utf-8")).digest()[:8], "big") '
    "< threshold, threshold = int(member_fraction * 2**64)"
)
OFFLINE_ENV = {"NO_ALBUMENTATIONS_UPDATE": "1", "WANDB_MODE": "disabled", "WANDB_SILENT": "true"}


def say(message: str):
    print(f"[datacomp] {message}", flush=True)


def split_threshold(member_fraction: float) -> int:
    return int(member_fraction * 2**64)


def member_mask(uids, seed: int, member_fraction: float) -> np.ndarray:
    """True where a uid is a member under RULE."""
    threshold, prefix = split_threshold(member_fraction), f"{seed}:"
    return np.fromiter(
        (
            int.from_bytes(hashlib.sha256((prefix + u).encode("utf-8")).digest()[:8], "big")
            < threshold
            for u in uids
        ),
        dtype=bool,
        count=len(uids),
    )


def metadata_files(path) -> list[Path]:
    p = Path(path)
    if p.is_dir():
        files = sorted(p.glob("*.parquet"))
        if not files:
            raise ValueError(f"--metadata={str(path)!r}: the folder holds no .parquet files")
        return files
    if not p.is_file():
        raise FileNotFoundError(f"--metadata={str(path)!r}: no such file or folder")
    return [p]


def read_metadata(files: list[Path], verify_sha256: bool, blur_faces: bool):
    """One pyarrow table of uid, url, text (+ sha256 to verify, + face_bboxes to blur) of all
    files."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schemas = {}
    for f in files:
        try:
            schemas[f] = pq.read_schema(f).names
        except Exception as err:
            raise ValueError(
                f"--metadata: {f}: not a readable parquet file ({type(err).__name__}: {err})"
            ) from err
        missing = [c for c in REQUIRED_COLUMNS if c not in schemas[f]]
        if verify_sha256 and HASH not in schemas[f]:
            missing.append(f"{HASH} (needed by --verify-sha256)")
        if missing:
            raise ValueError(
                f"--metadata: {f} has no column {', '.join(missing)} (its columns: {schemas[f]})"
            )
    columns = list(REQUIRED_COLUMNS) + ([HASH] if verify_sha256 else [])
    if blur_faces and all(FACE_BOXES in names for names in schemas.values()):
        columns.append(FACE_BOXES)
    tables = []
    for f in files:
        table = pq.read_table(f, columns=columns)
        for column in ("uid", "url", "text"):
            table = table.set_column(
                table.schema.get_field_index(column), column, table.column(column).cast(pa.string())
            )
        if table.column("uid").null_count:
            raise ValueError(f"--metadata: {f}: {table.column('uid').null_count} rows have no uid")
        tables.append(table)
    try:
        return pa.concat_tables(tables)
    except pa.ArrowInvalid as err:
        raise ValueError(f"--metadata: the parquet files' column types differ ({err})") from err


def split_metadata(table, seed: int, member_fraction: float):
    """(the rows that can be fetched, their uids, member mask, rows dropped for a null url or
    text)."""
    import pyarrow.compute as pc

    valid = pc.and_(pc.is_valid(table.column("url")), pc.is_valid(table.column("text")))
    dropped = len(table) - pc.sum(valid).as_py() if len(table) else 0
    table = table.filter(valid)
    uids = np.array(table.column("uid").to_pylist(), dtype=str)
    values, counts = np.unique(uids, return_counts=True)
    if (counts > 1).any():
        dup = values[counts > 1]
        raise ValueError(
            f"--metadata: {len(dup)} uids occur more than once (e.g. {list(dup[:3])}); "
            "each uid must be one pair, or it could be fetched on both sides"
        )
    return table, uids, member_mask(uids, seed, member_fraction), dropped


def _settings_match(path: Path, record: dict):
    """Refuse an --out that holds a split or fetch made with other settings; a rerun resumes."""
    if not path.exists():
        return
    old = json.loads(path.read_text())
    differ = sorted(k for k in set(old) | set(record) if old.get(k) != record.get(k))
    if differ:
        raise ValueError(
            f"--out={str(path.parent)!r} already holds a split fetched with other settings "
            f"({', '.join(differ)} differ from {path.name}); use another --out or remove it"
        )


@contextmanager
def offline_img2dataset():
    """img2dataset imported and run with every call home off (its worker processes are spawned
    inside, so they inherit this environment); the environment and img2dataset's SIGINT handler
    are restored afterwards, so an in-process call leaves its caller as it was."""
    saved = {k: os.environ.get(k) for k in OFFLINE_ENV}
    main_thread = threading.current_thread() is threading.main_thread()
    handler = signal.getsignal(signal.SIGINT) if main_thread else None
    os.environ.update(OFFLINE_ENV)
    try:
        import img2dataset

        yield img2dataset
    finally:
        if main_thread:
            signal.signal(signal.SIGINT, handler)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def count_side(folder: Path, requested: int) -> dict:
    """Sum img2dataset's per-shard stats: fetched = successes, failed = failed to download (404,
    timeout, hash mismatch, ...) + failed to decode / resize (corrupt bytes)."""
    totals, reasons = Counter(), Counter()
    stats_files = sorted(folder.glob("*_stats.json"))
    for path in stats_files:
        stats = json.loads(path.read_text())
        for k in ("count", "successes", "failed_to_download", "failed_to_resize"):
            totals[k] += int(stats[k])
        reasons.update({k: v for k, v in stats.get("status_dict", {}).items() if k != "success"})
    failed = totals["failed_to_download"] + totals["failed_to_resize"]
    return {
        "requested": requested,
        "fetched": totals["successes"],
        "failed": failed,
        "failed_to_download": totals["failed_to_download"],
        "failed_to_resize": totals["failed_to_resize"],
        "unaccounted": requested - totals["count"],  # rows of shards img2dataset gave up on
        "shards": len(stats_files),
        "top_errors": reasons.most_common(5),
    }


def check_img2dataset() -> str:
    try:
        version = importlib_metadata.version("img2dataset")
    except importlib_metadata.PackageNotFoundError:
        raise RuntimeError(
            f"img2dataset is not installed: pip install -e '.[datacomp]' && pip install --no-deps "
            f"img2dataset=={IMG2DATASET_VERSION} (docs/datacomp.md says why --no-deps)"
        ) from None
    if version != IMG2DATASET_VERSION:
        say(
            f"warning: img2dataset {version} is installed; this recipe is tested with "
            f"{IMG2DATASET_VERSION}"
        )
    return version


def fetch(
    metadata,
    out,
    seed: int = 0,
    member_fraction: float = 0.5,
    processes: int = 2,
    threads: int = 16,
    image_size: int = 224,
    resize_mode: str = "keep_ratio",
    samples_per_shard: int = 10000,
    timeout: int = 10,
    retries: int = 2,
    verify_sha256: bool = False,
    blur_faces: bool = True,
) -> dict:
    """Split, fetch both halves and count; returns what it writes to <out>/fetch.json."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not 0 < member_fraction < 1:
        raise ValueError(f"--member-fraction={member_fraction}: must be strictly between 0 and 1")
    for name, value in (
        ("--processes", processes),
        ("--threads", threads),
        ("--image-size", image_size),
        ("--samples-per-shard", samples_per_shard),
        ("--timeout", timeout),
    ):
        if value < 1:
            raise ValueError(f"{name}={value}: must be at least 1")
    if retries < 0:
        raise ValueError(f"--retries={retries}: must be at least 0")
    files = metadata_files(metadata)
    version = check_img2dataset()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out={str(out)!r} is a file, not a folder")

    table = read_metadata(files, verify_sha256, blur_faces)
    say(f"read {len(table)} rows from {len(files)} parquet file(s) under {metadata}")
    table, uids, is_member, dropped = split_metadata(table, seed, member_fraction)
    counts = {
        "member": int(is_member.sum()),
        "nonmember": int((~is_member).sum()),
        "dropped_null_url_or_text": dropped,
    }
    bbox_col = FACE_BOXES if FACE_BOXES in table.column_names else None
    options = {
        "image_size": image_size,
        "resize_mode": resize_mode,
        "resize_only_if_bigger": True,
        "encode_format": "jpg",
        "samples_per_shard": samples_per_shard,
        "timeout": timeout,
        "retries": retries,
        "verify_sha256": verify_sha256,
        "blur_faces_from": bbox_col,
    }
    record = {
        "seed": seed,
        "member_fraction": member_fraction,
        "hash": HASH,
        "rule": RULE,
        "threshold": split_threshold(member_fraction),
        "metadata": [f.name for f in files],
        "uids_sha256": hashlib.sha256("\n".join(uids).encode("utf-8")).hexdigest(),
        "counts": counts,
        "fetch": options,
    }
    _settings_match(out / "split.json", record)
    (out / "lists").mkdir(parents=True, exist_ok=True)
    sides = np.where(is_member, "member", "nonmember")
    pq.write_table(pa.table({"uid": uids, "side": sides}), out / "split.parquet")
    (out / "split.json").write_text(json.dumps(record, indent=2) + "\n")
    say(
        f"split (seed {seed}, member fraction {member_fraction}): {counts['member']} members, "
        f"{counts['nonmember']} non-members, {dropped} rows dropped for a null url or text -> "
        f"{out / 'split.parquet'}"
    )

    report = {"img2dataset": version}
    for side, folder_name in SIDES.items():
        folder, rows = out / folder_name, table.filter(pa.array(sides == side))
        list_path = out / "lists" / f"{folder_name}.parquet"
        pq.write_table(rows, list_path)
        if len(rows):
            say(
                f"fetching {len(rows)} {folder_name} into {folder} ({processes} processes x "
                f"{threads} threads)"
            )
            with offline_img2dataset() as img2dataset:
                img2dataset.download(
                    url_list=str(list_path),
                    input_format="parquet",
                    url_col="url",
                    caption_col="text",
                    save_additional_columns=["uid"],
                    bbox_col=bbox_col,
                    output_folder=str(folder),
                    output_format="webdataset",
                    oom_shard_count=5,
                    number_sample_per_shard=samples_per_shard,
                    processes_count=processes,
                    thread_count=threads,
                    image_size=image_size,
                    resize_mode=resize_mode,
                    resize_only_if_bigger=True,
                    encode_format="jpg",
                    encode_quality=95,
                    timeout=timeout,
                    retries=retries,
                    compute_hash=HASH,
                    verify_hash=[HASH, HASH] if verify_sha256 else None,
                    enable_wandb=False,
                    distributor="multiprocessing",
                    incremental_mode="incremental",
                )
        report[folder_name] = count_side(folder, len(rows))
    report["total"] = {
        k: sum(report[f][k] for f in SIDES.values())
        for k in ("requested", "fetched", "failed", "unaccounted")
    }
    (out / "fetch.json").write_text(json.dumps(report, indent=2) + "\n")
    for name in (*SIDES.values(), "total"):
        r = report[name]
        detail = (
            f" ({r['failed_to_download']} not downloaded, {r['failed_to_resize']} undecodable)"
            if name != "total"
            else ""
        )
        say(
            f"{name}: requested {r['requested']}, fetched {r['fetched']}, failed "
            f"{r['failed']}{detail}"
            + (
                f", {r['unaccounted']} unaccounted (shards img2dataset gave up on; rerun to retry)"
                if r["unaccounted"]
                else ""
            )
        )
    say(f"counts -> {out / 'fetch.json'}")
    return report


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m mia.data.datacomp", description=__doc__.split("\n\n")[0]
    )
    p.add_argument(
        "--metadata",
        required=True,
        help="DataComp parquet file, or folder of them (uid, url, text)",
    )
    p.add_argument(
        "--out", required=True, help="output folder: split.*, members/, nonmembers/, fetch.json"
    )
    p.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    p.add_argument(
        "--member-fraction", type=float, default=0.5, help="expected share of members (default 0.5)"
    )
    p.add_argument("--processes", type=int, default=2, help="img2dataset processes (default 2)")
    p.add_argument(
        "--threads",
        type=int,
        default=16,
        help="img2dataset download threads per process (default 16)",
    )
    p.add_argument(
        "--image-size", type=int, default=224, help="resize target in pixels (default 224)"
    )
    p.add_argument(
        "--resize-mode",
        default="keep_ratio",
        choices=["no", "keep_ratio", "keep_ratio_largest", "center_crop", "border"],
        help=(
            "img2dataset resize mode (default keep_ratio: shorter side to --image-size, never "
            "upscaled)"
        ),
    )
    p.add_argument("--samples-per-shard", type=int, default=10000, help="default 10000")
    p.add_argument("--timeout", type=int, default=10, help="seconds per download (default 10)")
    p.add_argument("--retries", type=int, default=2, help="download retries per url (default 2)")
    p.add_argument(
        "--verify-sha256",
        action="store_true",
        help=(
            "drop images whose sha256 differs from the metadata's sha256 column (counted as failed)"
        ),
    )
    p.add_argument(
        "--no-blur-faces",
        dest="blur_faces",
        action="store_false",
        help=f"keep faces unblurred even where the metadata has {FACE_BOXES}",
    )
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        report = fetch(**vars(args))
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    empty = [name for name in SIDES.values() if report[name]["fetched"] == 0]
    if empty:
        print(
            f"error: nothing fetched for {' and '.join(empty)}; see top_errors in "
            f"{Path(args.out) / 'fetch.json'}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
