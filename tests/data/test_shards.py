"""Reading shards as they come off the web: truncated shards, unreadable parts, and the index,
load_raw and the stream agreeing on which pairs exist in every epoch."""

import collections
import hashlib
import io
import json
import os
import tarfile

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image, features
from torch.utils.data import DataLoader

from mia.data import shards as sh
from mia.data.order import MemberOrder
from mia.data.pairs import PairStream, load_raw
from mia.data.synthetic import write_corpus
from mia.pipeline import run


def write_shard(path, samples):
    """A tar of `samples`: {key: {extension: bytes or str}}, files in the given order."""
    with tarfile.open(path, "w") as tar:
        for key, files in samples.items():
            for ext, data in files.items():
                data = data.encode() if isinstance(data, str) else data
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def jpeg(size=(20, 12), **kw) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 60)).save(buf, "JPEG", **kw)
    return buf.getvalue()


def complete_before(shard, cut) -> list[str]:
    """Keys of the samples of `shard` whose files all end before byte `cut`."""
    ends = collections.defaultdict(int)
    with tarfile.open(shard) as tar:
        for m in tar.getmembers():
            key = m.name.split(".")[0]
            ends[key] = max(ends[key], m.offset_data + m.size)
    return [k for k, end in ends.items() if end <= cut]


def stream_batches(stream, epochs, workers, batch):
    """Per epoch: the batches of positions the loader yields, and len(loader), which Lightning
    takes for the epoch's batch count."""
    loader = DataLoader(
        stream, batch_size=batch, num_workers=workers, persistent_workers=workers > 0
    )
    return [([b[2].tolist() for b in loader], len(loader)) for _ in range(epochs)]


def identity(image):
    return torch.zeros(1)


def no_tokens(captions):
    return torch.zeros(len(captions), 2, dtype=torch.long)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """30 pairs in 3 shards: the pristine copy of every test's shards."""
    return write_corpus(tmp_path_factory.mktemp("pristine"), 30, shard_size=10, seed=0)


def copy_shards(corpus, folder, cut=None):
    """The corpus's shards copied into `folder`, the last one cut to `cut` bytes if given."""
    folder.mkdir()
    for shard in sorted(corpus.glob("*.tar")):
        (folder / shard.name).write_bytes(shard.read_bytes())
    if cut is not None:
        os.truncate(folder / "00002.tar", cut)
    return sh.list_shards(folder)


def test_a_truncated_shard_costs_only_the_samples_past_the_cut(corpus, tmp_path):
    last = corpus / "00002.tar"
    size = last.stat().st_size
    with tarfile.open(last) as tar:
        members = tar.getmembers()
    # Cuts inside an image, inside a JSON's header, inside a caption, right after a sample, and at
    # half.
    jpg, js, txt = (
        next(m for m in members[9:] if m.name.endswith(ext)) for ext in (".jpg", ".json", ".txt")
    )
    cuts = [
        jpg.offset_data + 100,
        js.offset + 700,
        txt.offset_data + 10,
        txt.offset_data + txt.size,
        size // 2,
    ]
    for n, cut in enumerate(cuts):
        shards = copy_shards(corpus, tmp_path / str(n), cut)
        index = sh.build_index(shards)
        kept = complete_before(last, cut)
        expected = [f"syn0000{i:09d}" for i in range(20)] + [f"syn0000{int(k):09d}" for k in kept]
        assert list(index.uids) == expected, cut
        # The sample the cut went through is counted, never indexed under a wrong uid.
        assert len(index.corrupt) <= 1 and all(c["shard"] == "00002.tar" for c in index.corrupt)
        # load_raw finds every indexed pair, the stream yields each exactly once per epoch.
        images, captions = load_raw(shards, list(index.uids))
        assert len(images) == len(index) and all(captions)
        order = MemberOrder(len(index), 8, seed=0)
        stream = PairStream(shards, list(index.uids), identity, no_tokens, order, shuffle_buffer=4)
        for batches, expected in stream_batches(stream, 2, 2, 8):
            assert sorted(p for b in batches for p in b) == list(range(len(index)))
            assert len(batches) == expected


def test_every_rank_streams_its_share_in_equal_batches(corpus):
    """Under DDP each rank streams its MemberOrder share through two workers: the ranks together see
    every member once per epoch, in as many batches as len(loader) says, of equal sizes step by
    step."""
    shards, world, batch = sh.list_shards(corpus), 2, 8
    uids = list(sh.build_index(shards).uids)
    per_rank = [
        stream_batches(
            PairStream(
                shards,
                uids,
                identity,
                no_tokens,
                MemberOrder(30, batch, 0, r, world),
                shuffle_buffer=4,
            ),
            2,
            2,
            batch // world,
        )
        for r in range(world)
    ]
    for epoch in range(2):
        (a, len_a), (b, len_b) = per_rank[0][epoch], per_rank[1][epoch]
        assert len(a) == len(b) == len_a == len_b == 4  # ceil(15 / 4) on both ranks
        assert [len(x) for x in a] == [len(x) for x in b]
        assert sorted(p for x in a + b for p in x) == list(range(30))


@pytest.mark.slow
@pytest.mark.parametrize("in_memory", [False, True])
def test_a_target_trains_on_a_folder_with_a_truncated_shard(make_cfg, tmp_path, in_memory):
    """Ten shards, the last cut in half as by an interrupted download: every member is trained on
    exactly T times, streamed by two workers (whose shares the cut unbalances) or held in memory."""
    folder = write_corpus(tmp_path / "shards", 200, shard_size=20, seed=0)
    os.truncate(folder / "00009.tar", (folder / "00009.tar").stat().st_size // 2)
    cfg = make_cfg(
        "data=webdataset",
        f"data.path={folder}",
        f"data.in_memory={in_memory}",
        "data.size=60",
        "data.split.holdout=60",
        "data.split.eval_size=10",
        "data.split.known_size=10",
        "data.split.aux_size=20",
        "train.batch_size=32",
        "train.num_workers=2",
        "train.epochs=2",
        "train.progress_bar=false",
        "n_bootstrap=50",
        small=False,
    )
    res = json.loads(run(cfg).read_text())
    assert res["target"]["epochs"] == 2 and res["data"]["members"] == 60
    index = sh.build_index(sh.list_shards(folder))
    assert res["data"]["broken_shards"] == 1 and res["data"]["corrupt_skipped"] == len(
        index.corrupt
    )


def test_unreadable_parts_are_skipped_and_counted_by_kind(tmp_path):
    good = {
        "jpg": jpeg(),
        "txt": "a caption",
        "json": json.dumps({"uid": "u0", "url": "http://x/0"}),
    }
    write_shard(
        tmp_path / "00000.tar",
        {
            "k0": good,
            "k1": {**good, "json": json.dumps({"uid": "u1"}), "jpg": jpeg()[:40]},  # truncated JPEG
            "k2": {**good, "json": "{not json"},  # unreadable JSON
            "k3": {"jpg": jpeg(), "json": json.dumps({"uid": "u3"})},  # no caption anywhere
            "k4": {"txt": "no image", "json": json.dumps({"uid": "u4"})},  # no image
            "k5": {
                **good,
                "json": json.dumps({"uid": "u5", "caption": "c"}),
                "txt": b"\xff\xfe bad utf-8",
            },
        },
    )
    index = sh.build_index(sh.list_shards(tmp_path))
    assert list(index.uids) == ["u0"] and not index.broken_shards
    assert {c["key"]: c["kind"] for c in index.corrupt} == {
        "k1": "image",
        "k2": "metadata",
        "k3": "metadata",
        "k4": "image",
        "k5": "metadata",
    }
    assert sh.corrupt_report(index, index) == {
        "corrupt_skipped": 10,
        "broken_shards": 0,
        "corrupt_by_kind": {"image": 4, "metadata": 6},
    }


def test_a_shard_changed_after_indexing_stops_the_readers_with_the_sample_named(corpus, tmp_path):
    """The index decodes as the readers do, so a stream-time failure means the shard changed in
    place (same name, size and mtime): the readers stop and name the sample instead of skipping a
    member."""
    shards = copy_shards(corpus, tmp_path / "shards")
    uids = list(sh.build_index(shards).uids)
    shard, stat = shards[1], shards[1].stat()
    with tarfile.open(shard) as tar:
        victim = next(m for m in tar.getmembers() if m.name == "000000013.jpg")
    data = bytearray(shard.read_bytes())
    data[victim.offset_data : victim.offset_data + victim.size] = b"\0" * victim.size
    shard.write_bytes(bytes(data))
    os.utime(shard, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(
        RuntimeError, match="000000013 in .*00001.tar was readable when the shards were indexed"
    ):
        load_raw(shards, uids)
    stream = PairStream(shards, uids, identity, no_tokens, MemberOrder(len(uids), 8, seed=0))
    with pytest.raises(RuntimeError, match="000000013 .* Touch it"):
        list(stream)


def picture(width, height):
    """An RGB test picture with structure at every scale: gradients and a checkerboard."""
    y, x = np.mgrid[0:height, 0:width]
    r, g = 255 * x / max(1, width - 1), 255 * y / max(1, height - 1)
    b = 60 + 140 * (((x // 16) + (y // 16)) % 2)
    return Image.fromarray(np.stack([r, g, b], -1).astype(np.uint8))


def encoded(image, fmt, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kw)
    return buf.getvalue()


def web_images():
    """(name, file bytes, the RGB picture it should decode to) in the sizes, aspect ratios and modes
    of web images."""
    rgb = picture(640, 480)
    grey = picture(200, 900).convert("L")
    wide = picture(1024, 300)
    rgba = picture(500, 500).convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize((500, 500)))
    palette = picture(120, 80).quantize(16)
    palette.info["transparency"] = bytes([0, 128] + [255] * 14)  # per-entry alpha (a tRNS chunk)
    deep = np.asarray(picture(256, 128).convert("L"), dtype=np.uint16) * 257  # 16-bit greyscale
    cases = [
        ("rgb jpeg", encoded(rgb, "JPEG", quality=92), rgb),
        ("progressive jpeg", encoded(wide, "JPEG", quality=92, progressive=True), wide),
        ("grey jpeg", encoded(grey, "JPEG", quality=92), grey.convert("RGB")),
        ("cmyk jpeg", encoded(rgb.convert("CMYK"), "JPEG", quality=92), rgb),
        ("rgba png", encoded(rgba, "PNG"), rgba.convert("RGB")),
        (
            "palette png",
            encoded(palette, "PNG", transparency=palette.info["transparency"]),
            palette.convert("RGBA").convert("RGB"),
        ),
        (
            "16-bit png",
            encoded(Image.fromarray(deep), "PNG"),
            picture(256, 128).convert("L").convert("RGB"),
        ),
        ("tiny png", encoded(picture(3, 5), "PNG"), picture(3, 5)),
    ]
    if features.check("webp"):
        cases.append(("webp", encoded(picture(300, 300), "WEBP", quality=92), picture(300, 300)))
    assert Image.open(io.BytesIO(cases[6][1])).mode.startswith("I;16")  # PIL did write 16 bits
    return cases


def test_web_images_decode_at_224_px_and_unreadable_ones_are_skipped_and_counted(tmp_path):
    """Every mode decodes to the right picture and through open_clip's 224 px preprocessing, in
    memory and streamed; truncated, random and empty image files are skipped and counted by the
    index, and so never reach the readers."""
    images = web_images()
    bad = {
        "truncated": encoded(picture(300, 200), "JPEG")[:700],
        "random": np.random.default_rng(0).bytes(4000),
        "empty": b"",
    }
    samples = {}
    for i, (name, data, _) in enumerate(images):
        ext = "jpg" if "jpeg" in name else name.split()[-1]
        samples[f"{i:04d}"] = {ext: data, "txt": name, "json": json.dumps({"uid": f"u{i}"})}
    for name, data in bad.items():
        samples[f"bad-{name}"] = {"jpg": data, "txt": name, "json": json.dumps({"uid": name})}
    keys = list(samples)
    write_shard(tmp_path / "00000.tar", {k: samples[k] for k in keys[::2]})
    write_shard(tmp_path / "00001.tar", {k: samples[k] for k in keys[1::2]})

    shards = sh.list_shards(tmp_path)
    index = sh.build_index(shards)
    assert sorted(index.uids) == sorted(f"u{i}" for i in range(len(images)))
    assert {c["key"]: c["kind"] for c in index.corrupt} == {f"bad-{name}": "image" for name in bad}
    assert sh.corrupt_report(index)["corrupt_skipped"] == 3

    uids = [f"u{i}" for i in range(len(images))]
    decoded, captions = load_raw(shards, uids)
    for (name, _, expected), image, caption in zip(images, decoded, captions, strict=True):
        assert image.mode == "RGB" and image.size == expected.size and caption == name
        error = np.abs(np.asarray(image, float) - np.asarray(expected, float)).mean()
        assert error < 6, name  # JPEG losses only

    preprocess = open_clip.image_transform(224, is_train=False)
    stream = PairStream(
        shards, uids, preprocess, no_tokens, MemberOrder(len(uids), 4, seed=0), shuffle_buffer=3
    )
    ((batches, expected_batches),) = stream_batches(stream, 1, 2, 4)
    assert len(batches) == expected_batches and sorted(p for b in batches for p in b) == list(
        range(len(uids))
    )
    tensors = torch.cat([b[0] for b in DataLoader(stream, batch_size=4)])
    assert tensors.shape == (len(uids), 3, 224, 224) and torch.isfinite(tensors).all()


def test_the_index_keeps_each_images_sha256(tmp_path):
    """The JSON's sha256 (img2dataset's compute_hash, DataComp's column) where it has one, else the
    hash of the image bytes; the cached index keeps them."""
    same, other = jpeg(), jpeg((30, 30))
    given = "AB" * 32
    write_shard(
        tmp_path / "00000.tar",
        {
            "k0": {"jpg": same, "txt": "a", "json": json.dumps({"uid": "u0"})},
            "k1": {
                "jpg": same,
                "txt": "b",
                "json": json.dumps({"uid": "u1", "sha256": "not a hash"}),
            },
            "k2": {"jpg": other, "txt": "c", "json": json.dumps({"uid": "u2", "sha256": given})},
        },
    )
    index = sh.build_index(sh.list_shards(tmp_path))
    assert list(index.sha256) == [hashlib.sha256(same).hexdigest()] * 2 + [given.lower()]
    index.save(tmp_path / "index.npz")
    assert list(sh.Index.load(tmp_path / "index.npz").sha256) == list(index.sha256)


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_the_plain_tar_reader_reads_what_tarfile_reads(tmp_path, fmt):
    """mia's own header parser (uncompressed shards) against Python's tarfile: long names, a ustar
    prefix, a directory, an empty file, sizes off the block size; then a compressed copy
    (tarfile)."""
    from mia.data.shards import _tar_files

    files = {
        "a" * 120 + ".jpg": b"x" * 700,
        "deep/" * 30 + "k.txt": b"caption",
        "e.json": b"",
        "__meta__/x": b"skipped",
        "b.cls": bytes(range(256)) * 5,
    }
    if fmt == tarfile.USTAR_FORMAT:
        files = {k: v for k, v in files.items() if len(k) < 100 or k.startswith("deep")}
    plain, packed = tmp_path / "plain.tar", tmp_path / "packed.tar"
    for path, mode in ((plain, "w"), (packed, "w:gz")):
        with tarfile.open(path, mode, format=fmt) as tar:
            folder = tarfile.TarInfo("adir")
            folder.type = tarfile.DIRTYPE
            tar.addfile(folder)  # not a regular file: skipped
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    expected = [(k, v) for k, v in files.items() if not k.startswith("__")]
    for path in (plain, packed):
        failed = []
        assert list(_tar_files(path, failed)) == expected and not failed
    # a damaged header mid-archive: the files before it are kept and the error is recorded
    data = bytearray(plain.read_bytes())
    at = data.index(
        b"e.json"
    )  # its header (or, for pax and GNU, the file's own header after the long name)
    start = at - at % 512
    data[start + 148 : start + 150] = b"99"
    plain.write_bytes(bytes(data))
    failed = []
    got = list(_tar_files(plain, failed))
    assert got == expected[: len(got)] and len(got) < len(expected) and "checksum" in failed[0]
