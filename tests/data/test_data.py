import io
import json
import tarfile

import numpy as np
import pytest

from mia.data import shards as sh
from mia.data.synthetic import make_sample, write_corpus
from mia.validate import build


def test_generator_is_deterministic_and_varied():
    a_img, a_cap, a_meta = make_sample(7, seed=3)
    b_img, b_cap, b_meta = make_sample(7, seed=3)
    assert (
        a_cap == b_cap and a_meta == b_meta and np.array_equal(np.asarray(a_img), np.asarray(b_img))
    )
    c_img, c_cap, _ = make_sample(8, seed=3)
    assert c_cap != a_cap and not np.array_equal(np.asarray(c_img), np.asarray(a_img))
    assert "." not in a_meta["key"]


def test_shifted_corpus_differs_in_style():
    _, iid, _ = make_sample(0, seed=0)
    _, ood, meta = make_sample(0, seed=0, style="shifted")
    assert "photo by" in iid and "Credit:" in ood and meta["uid"].startswith("ood")
    with pytest.raises(ValueError, match="data.style"):
        make_sample(0, seed=0, style="nope")


def test_corpus_layout_matches_datacomp(tmp_path):
    write_corpus(tmp_path, 25, shard_size=10, seed=0)
    sizes = json.loads((tmp_path / "sizes.json").read_text())
    assert sizes == {"00000.tar": 10, "00001.tar": 10, "00002.tar": 5}
    with tarfile.open(tmp_path / "00000.tar") as tar:
        names = tar.getnames()
    assert sorted(names[:3]) == ["000000000.jpg", "000000000.json", "000000000.txt"]
    index = sh.build_index(sh.list_shards(tmp_path))
    assert len(index) == 25 and len(set(index.uids)) == 25 and not index.corrupt


def _corrupt_one_jpeg(shard, victim_key):
    """Rewrite a shard with the JPEG of `victim_key` truncated to garbage."""
    members = []
    with tarfile.open(shard) as tar:
        for m in tar.getmembers():
            members.append((m, tar.extractfile(m).read()))
    with tarfile.open(shard, "w") as tar:
        for m, data in members:
            if m.name == f"{victim_key}.jpg":
                data = data[:20] + b"\x00garbage"
                m.size = len(data)
            tar.addfile(m, io.BytesIO(data))


def test_corrupt_jpeg_is_skipped_and_counted(tmp_path):
    write_corpus(tmp_path, 12, shard_size=6, seed=0)
    _corrupt_one_jpeg(tmp_path / "00001.tar", "000000008")
    index = sh.build_index(sh.list_shards(tmp_path))
    assert len(index) == 11
    assert len(index.corrupt) == 1 and index.corrupt[0]["key"] == "000000008"
    assert make_sample(8, seed=0)[2]["uid"] not in set(index.uids)


def test_missing_or_empty_shard_folder(tmp_path, make_cfg):
    cfg = make_cfg("data=webdataset", f"data.path={tmp_path / 'nope'}", small=False)
    with pytest.raises(ValueError, match="data.path=.*no such folder"):
        build(cfg.data, "data").member_corpus(tmp_path / "cache")
    (tmp_path / "empty").mkdir()
    cfg = make_cfg("data=webdataset", f"data.path={tmp_path / 'empty'}", small=False)
    with pytest.raises(ValueError, match="data.path=.*holds no .tar shards"):
        build(cfg.data, "data").member_corpus(tmp_path / "cache")
    cfg = make_cfg("data=webdataset", small=False)
    with pytest.raises(ValueError, match="data.path is not set"):
        build(cfg.data, "data").member_corpus(tmp_path / "cache")


def test_shards_without_readable_samples(tmp_path):
    with tarfile.open(tmp_path / "00000.tar", "w") as tar:
        data = b"not a jpeg"
        info = tarfile.TarInfo("000000000.jpg")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(ValueError, match="no readable samples"):
        sh.build_index(sh.list_shards(tmp_path))


def test_synthetic_corpus_is_generated_once(make_cfg, tmp_path):
    cfg = make_cfg()
    first = build(cfg.data, "data").member_corpus(tmp_path / "cache")
    mtime = first.shards[0].stat().st_mtime
    second = build(cfg.data, "data").member_corpus(tmp_path / "cache")
    assert second.shards[0].stat().st_mtime == mtime and second.fingerprint == first.fingerprint
    assert len(second.index) == 1200
