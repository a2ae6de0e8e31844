"""The DataComp recipe end to end against a local image server (nothing beyond 127.0.0.1), and
uid lists in their three formats."""

import hashlib
import io
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from mia.data import shards as sh
from mia.data.datacomp import fetch, main, member_mask
from mia.data.uids import read_uids

REPO = Path(__file__).resolve().parents[2]
SEED = 3
needs_img2dataset = pytest.mark.skipif(
    find_spec("img2dataset") is None,
    reason="img2dataset is not installed "
    "(pip install --no-deps img2dataset==1.47.0, see docs/datacomp.md)",
)


def e2e(test):
    """A test on the one recipe run. Slow: img2dataset spawns a logger and a worker process per
    half, and each imports torch (through webdataset), 20-40 s in all on 2 busy cores."""
    return pytest.mark.slow(needs_img2dataset(test))


# Loaded by every Python process of the recipe (the CLI and img2dataset's spawned workers) through
# PYTHONPATH: any connection or name lookup beyond loopback is refused and written to a log.
NET_GUARD = """
import os, socket
_LOG = os.environ.get("MIA_NET_GUARD_LOG")
if _LOG:
    _LOCAL = {"127.0.0.1", "localhost", "::1"}
    def _note(what):
        with open(_LOG, "a") as f:
            f.write(f"{os.getpid()} {what}\\n")
    def _host(h):
        return h.decode() if isinstance(h, bytes) else str(h)
    def _check(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and _host(address[0]) not in _LOCAL:
            _note(f"blocked connect {address!r}")
            raise OSError("network beyond 127.0.0.1 is off in this test")
    _connect, _connect_ex = socket.socket.connect, socket.socket.connect_ex
    _getaddrinfo = socket.getaddrinfo
    def connect(self, address):
        _check(self, address)
        return _connect(self, address)
    def connect_ex(self, address):
        _check(self, address)
        return _connect_ex(self, address)
    def getaddrinfo(host, *args, **kwargs):
        if host is not None and _host(host) not in _LOCAL:
            _note(f"blocked resolve {host!r}")
            raise socket.gaierror(socket.EAI_NONAME, "network beyond 127.0.0.1 is off in this test")
        return _getaddrinfo(host, *args, **kwargs)
    socket.socket.connect, socket.socket.connect_ex = connect, connect_ex
    socket.getaddrinfo = getaddrinfo
    _note("loaded")
"""


def _image(rng, i):
    """A varied image: JPEG or PNG (RGB, RGBA or grey), 24 to 400 px a side, gradient plus noise."""
    w, h = int(rng.integers(24, 400)), int(rng.integers(24, 400))
    grad = np.linspace(0, 255, w, dtype=np.float32)[None, :, None] * rng.random(3)[None, None, :]
    pixels = np.clip(grad + rng.normal(0, 30, (h, w, 3)), 0, 255).astype(np.uint8)
    image, buf = Image.fromarray(pixels), io.BytesIO()
    if i % 3 == 0:
        image = image.convert("RGBA" if i % 2 else "L")
        image.save(buf, "PNG")
        return buf.getvalue(), "png", "image/png"
    image.save(buf, "JPEG", quality=90)
    return buf.getvalue(), "jpg", "image/jpeg"


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """Served images plus DataComp-style metadata: 36 good images (one listed with a wrong sha256),
    4 URLs answering 404, 4 answering corrupt bytes, and one row without text."""
    rng = np.random.default_rng(0)
    routes, rows, expect = (
        {},
        [],
        {"ok": [], "404": [], "corrupt": [], "bad_hash": [], "no_text": []},
    )
    for i in range(36):
        body, ext, ctype = _image(rng, i)
        path = f"/img/{i}.{ext}"
        routes[path] = (200, body, ctype)
        kind = "bad_hash" if i == 7 else "ok"
        rows.append((kind, path, hashlib.sha256(body if kind == "ok" else b"other").hexdigest()))
    for i in range(4):
        rows.append(("404", f"/missing/{i}.jpg", "0" * 64))
    jpeg = routes["/img/1.jpg"][1]
    for i, body in enumerate(
        [
            rng.bytes(3000),
            b"<html><body>gone</body></html>",
            routes["/img/0.png"][1][:300],
            jpeg[:200] + rng.bytes(2000),
        ]
    ):
        routes[f"/corrupt/{i}.jpg"] = (200, body, "image/jpeg")
        rows.append(("corrupt", f"/corrupt/{i}.jpg", hashlib.sha256(body).hexdigest()))
    rows.append(("no_text", "/img/1.jpg", "0" * 64))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            status, body, ctype = routes.get(self.path, (404, b"not found", "text/plain"))
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    uids = [rng.bytes(16).hex() for _ in rows]
    for uid, (kind, _, _) in zip(uids, rows, strict=True):
        expect[kind].append(uid)
    boxes = [
        [[0.2, 0.2, 0.6, 0.7]] if n % 10 == 2 else [] for n in range(len(rows))
    ]  # a few faces to blur
    table = pa.table(
        {
            "uid": uids,
            "url": [base + path for _, path, _ in rows],
            "text": [
                None if kind == "no_text" else f"picture {n} of a thing, {kind}"
                for n, (kind, _, _) in enumerate(rows)
            ],
            "sha256": [digest for _, _, digest in rows],
            "face_bboxes": boxes,
            "clip_b32_similarity_score": rng.random(len(rows)),
        }
    )
    folder = tmp_path_factory.mktemp("metadata")
    pq.write_table(
        table.slice(0, 20), folder / "0000.parquet"
    )  # a folder of two files, as DataComp's
    pq.write_table(table.slice(20), folder / "0001.parquet")
    yield {
        "metadata": folder,
        "expect": expect,
        "captions": dict(zip(uids, table.column("text").to_pylist(), strict=True)),
    }
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def fetched(pool, tmp_path_factory):
    """One run of the CLI, every process of it behind the network guard."""
    tmp = tmp_path_factory.mktemp("fetch")
    (tmp / "guard").mkdir()
    (tmp / "guard" / "sitecustomize.py").write_text(NET_GUARD)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp / "guard"), str(REPO)]),
        "MIA_NET_GUARD_LOG": str(tmp / "net.log"),
    }
    for k in ("NO_ALBUMENTATIONS_UPDATE", "WANDB_MODE"):  # the recipe itself must switch these off
        env.pop(k, None)
    out = tmp / "out"
    cmd = [
        sys.executable,
        "-m",
        "mia.data.datacomp",
        "--metadata",
        str(pool["metadata"]),
        "--out",
        str(out),
        "--seed",
        str(SEED),
        "--processes",
        "1",
        "--threads",
        "4",
        "--image-size",
        "64",
        "--samples-per-shard",
        "8",
        "--timeout",
        "5",
        "--verify-sha256",
    ]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {
        "out": out,
        "stdout": proc.stdout,
        "net_log": (tmp / "net.log").read_text().splitlines(),
        **pool,
    }


def _side_of(uids):
    """The split rule as documented in split.json, recomputed here from the hash and seed alone."""
    threshold = int(0.5 * 2**64)
    return {
        u: "member"
        if int.from_bytes(hashlib.sha256(f"{SEED}:{u}".encode()).digest()[:8], "big") < threshold
        else "nonmember"
        for u in uids
    }


@e2e
def test_split_is_deterministic_and_disjoint(fetched):
    expect, out = fetched["expect"], fetched["out"]
    split = pq.read_table(out / "split.parquet").to_pydict()
    sides = dict(zip(split["uid"], split["side"], strict=True))
    listed = [u for kind, us in expect.items() if kind != "no_text" for u in us]
    assert sorted(sides) == sorted(listed) and len(split["uid"]) == len(
        listed
    )  # every row once, no_text dropped
    assert sides == _side_of(listed)
    members = {u for u, s in sides.items() if s == "member"}
    nonmembers = {u for u, s in sides.items() if s == "nonmember"}
    assert members and nonmembers and not members & nonmembers
    record = json.loads((out / "split.json").read_text())
    assert (
        record["seed"] == SEED and record["hash"] == "sha256" and record["member_fraction"] == 0.5
    )
    assert record["counts"] == {
        "member": len(members),
        "nonmember": len(nonmembers),
        "dropped_null_url_or_text": 1,
    }
    assert record["fetch"]["blur_faces_from"] == "face_bboxes"
    # The rule depends on nothing but the seed and each uid: not on row order, but on the seed.
    uids = np.array(listed)
    assert np.array_equal(member_mask(uids[::-1], SEED, 0.5)[::-1], member_mask(uids, SEED, 0.5))
    assert not np.array_equal(member_mask(uids, SEED + 1, 0.5), member_mask(uids, SEED, 0.5))


@e2e
def test_failures_are_counted_not_written(fetched):
    expect, out = fetched["expect"], fetched["out"]
    sides = _side_of(u for kind, us in expect.items() if kind != "no_text" for u in us)
    report = json.loads((out / "fetch.json").read_text())

    def on(side, *kinds):
        return sum(sides[u] == side for k in kinds for u in expect[k])

    for side, folder in (("member", "members"), ("nonmember", "nonmembers")):
        r = report[folder]
        assert r["requested"] == on(side, "ok", "404", "corrupt", "bad_hash")
        assert r["fetched"] == on(side, "ok")
        assert r["failed_to_download"] == on(
            side, "404", "bad_hash"
        )  # a hash mismatch is a failed download
        assert r["failed_to_resize"] == on(side, "corrupt")
        assert (
            r["failed"] == r["failed_to_download"] + r["failed_to_resize"] and r["unaccounted"] == 0
        )
        assert (
            f"{folder}: requested {r['requested']}, fetched {r['fetched']}, failed {r['failed']}"
            in fetched["stdout"]
        )
    assert report["total"] == {"requested": 44, "fetched": 35, "failed": 9, "unaccounted": 0}


@e2e
def test_shards_read_back_with_mias_reader(fetched):
    out, expect = fetched["out"], fetched["expect"]
    sides = _side_of(expect["ok"])
    for side, folder in (("member", "members"), ("nonmember", "nonmembers")):
        shards = sh.list_shards(out / folder)
        assert len(shards) >= 2 and all(
            len(s.stem) == 5 for s in shards
        )  # NNNNN.tar, 8 samples a shard
        index = sh.build_index(shards)
        assert not index.corrupt and len(index.uids) == len(set(index.uids))
        assert set(index.uids) == {u for u in expect["ok"] if sides[u] == side}
        assert all(
            c == fetched["captions"][u] for u, c in zip(index.uids, index.captions, strict=True)
        )
        assert all(url.startswith("http://127.0.0.1:") for url in index.urls)


@e2e
def test_nothing_beyond_loopback_was_contacted(fetched):
    blocked = [line for line in fetched["net_log"] if "blocked" in line]
    assert not blocked
    # the guard was really in place: in the CLI and in img2dataset's spawned workers and logger
    assert len({line.split()[0] for line in fetched["net_log"] if line.endswith("loaded")}) >= 3


@e2e
def test_uid_lists_in_three_formats(fetched, tmp_path):
    index = sh.build_index(sh.list_shards(fetched["out"] / "members"))
    uids = sorted(index.uids)
    pairs = np.array(
        [(int(u[:16], 16), int(u[16:32], 16)) for u in uids], np.dtype("u8,u8")
    )  # as DataComp does
    np.save(tmp_path / "datacomp.npy", pairs)
    np.save(tmp_path / "columns.npy", np.stack([pairs["f0"], pairs["f1"]], axis=1))
    (tmp_path / "uids.txt").write_text("\n".join(uids) + "\n\n")
    pq.write_table(pa.table({"uid": uids, "other": range(len(uids))}), tmp_path / "uids.parquet")
    for name in ("datacomp.npy", "columns.npy", "uids.txt", "uids.parquet"):
        got = read_uids(tmp_path / name, "data.members_uids")
        assert got.dtype.kind == "U" and list(got) == uids, name
    assert np.isin(index.uids, read_uids(tmp_path / "datacomp.npy", "data.members_uids")).all()


def test_read_uids_errors_name_key_and_file(tmp_path):
    key = "data.members_uids"
    with pytest.raises(FileNotFoundError, match=f"{key}=.*nope.npy.*no such file"):
        read_uids(tmp_path / "nope.npy", key)
    (tmp_path / "u.csv").write_text("a\n")
    with pytest.raises(ValueError, match=f"{key}=.*u.csv.*unknown uid list format"):
        read_uids(tmp_path / "u.csv", key)
    pq.write_table(pa.table({"id": ["a"]}), tmp_path / "u.parquet")
    with pytest.raises(ValueError, match=f"{key}=.*u.parquet.*no 'uid' column"):
        read_uids(tmp_path / "u.parquet", key)
    np.save(tmp_path / "u.npy", np.zeros(3, np.float32))
    with pytest.raises(ValueError, match=f"{key}=.*u.npy.*not a uid list"):
        read_uids(tmp_path / "u.npy", key)
    (tmp_path / "raw.npy").write_bytes(b"x" * 17)
    with pytest.raises(ValueError, match=f"{key}=.*raw.npy.*not a multiple of 16"):
        read_uids(tmp_path / "raw.npy", key)
    (tmp_path / "u.txt").write_text("\n  \n")
    with pytest.raises(ValueError, match=f"{key}=.*u.txt.*holds no uids"):
        read_uids(tmp_path / "u.txt", key)


def test_uid_lists_cover_the_full_128_bits(tmp_path):
    uids = ["0" * 32, "f" * 32, "0123456789abcdef" * 2, "8000000000000000" + "0" * 15 + "1"]
    pairs = np.array([(int(u[:16], 16), int(u[16:], 16)) for u in uids], np.dtype("u8,u8"))
    np.save(tmp_path / "u.npy", pairs)
    pairs.tofile(tmp_path / "memmap.npy")  # the headerless form DataComp's resharder also reads
    (tmp_path / "u.txt").write_text(" " + "\n".join(uids))
    pq.write_table(pa.table({"uid": uids}), tmp_path / "u.parquet")
    for name in ("u.npy", "memmap.npy", "u.txt", "u.parquet"):
        assert list(read_uids(tmp_path / name, "k")) == uids, name


def test_bad_arguments_are_named(tmp_path, capsys):
    assert main(["--metadata", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 2
    assert "--metadata=" in capsys.readouterr().err
    assert (
        main(
            ["--metadata", str(tmp_path), "--out", str(tmp_path / "o"), "--member-fraction", "1.5"]
        )
        == 2
    )
    assert "--member-fraction=1.5" in capsys.readouterr().err
    assert main(["--metadata", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "holds no .parquet files" in capsys.readouterr().err


@e2e
def test_bad_metadata_and_changed_settings_are_refused(fetched, tmp_path):
    pq.write_table(
        pa.table({"uid": ["a"], "url": ["http://127.0.0.1:9/x.jpg"]}), tmp_path / "m.parquet"
    )
    with pytest.raises(ValueError, match=r"--metadata: .*m.parquet has no column text"):
        fetch(tmp_path / "m.parquet", tmp_path / "o")
    pq.write_table(
        pa.table({"uid": ["a", "a"], "url": ["u", "v"], "text": ["x", "y"]}), tmp_path / "d.parquet"
    )
    with pytest.raises(ValueError, match="--metadata: 1 uids occur more than once"):
        fetch(tmp_path / "d.parquet", tmp_path / "o")
    with pytest.raises(ValueError, match=r"--metadata: .*sha256 \(needed by --verify-sha256\)"):
        fetch(tmp_path / "d.parquet", tmp_path / "o", verify_sha256=True)
    # the fetched --out again, with another seed: refused before anything is downloaded or
    # overwritten
    before = (fetched["out"] / "split.parquet").read_bytes()
    with pytest.raises(ValueError, match=r"--out=.*other settings \(.*seed.*\)"):
        fetch(fetched["metadata"], fetched["out"], seed=SEED + 1, verify_sha256=True)
    assert (fetched["out"] / "split.parquet").read_bytes() == before
