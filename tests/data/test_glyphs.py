"""The glyph corpus: real CJK glyphs (Noto Sans CJK) captioned from Unihan, built small in
tmp_path."""

import hashlib
import json

import numpy as np
import pytest

from mia.data import glyphs
from mia.data import shards as sh
from mia.data.dedup import normalise_caption
from mia.validate import build

try:
    glyphs.find_font(), glyphs.find_unihan()
    MISSING = None
except FileNotFoundError as err:
    MISSING = f"glyph corpus sources not installed: {err}"
needs_sources = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")


def _build(path, size=300, **kw):
    return glyphs.write_glyph_corpus(path, size, shard_size=120, **kw)


@needs_sources
def test_small_corpus_layout_captions_and_images(tmp_path):
    out = _build(tmp_path / "a")
    assert json.loads((out / "sizes.json").read_text()) == {
        "00000.tar": 120,
        "00001.tar": 120,
        "00002.tar": 60,
    }
    stats = json.loads((out / "glyphs.json").read_text())
    assert stats["distinct"] >= 20_000 and stats["dropped_duplicate_captions"] > 0
    assert stats["distinct"] + stats["dropped_duplicate_captions"] == stats["in_font"]
    index = sh.build_index(sh.list_shards(out))
    assert len(index) == 300 and len(set(index.uids)) == 300 and not index.corrupt
    assert len({normalise_caption(c) for c in index.captions}) == 300
    assert all(c.startswith("a ") and " radical glyph meaning: " in c for c in index.captions)
    samples = list(sh.raw_samples(sh.list_shards(out)))
    images = [np.asarray(sh.decode_image(s["jpg"])) for s in samples[:20]]
    assert all(im.shape == (32, 32, 3) for im in images)
    assert all(im.min() < 100 and im.max() > 200 for im in images)  # ink on paper, not a blank tile
    meta = json.loads(samples[0]["json"])
    assert (
        meta["uid"] == f"glyph{ord(meta['char']):06x}"
        and meta["caption"] == samples[0]["txt"].decode()
    )


@needs_sources
def test_corpus_is_deterministic_and_seeded(tmp_path):
    def digest(folder):
        return [hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.tar"))]

    assert digest(_build(tmp_path / "a", 150)) == digest(_build(tmp_path / "b", 150))
    other = sh.build_index(sh.list_shards(_build(tmp_path / "c", 150, seed=1)))
    assert set(other.uids) != set(sh.build_index(sh.list_shards(tmp_path / "a")).uids)


def test_caption_fields():
    row = {
        "kDefinition": "to wash",
        "kRSUnicode": "85.6",
        "kMandarin": "xǐ",
        "kCantonese": "sai2",
        "kJapaneseOn": "SEN SAI",
        "kKorean": "SEY",
    }
    assert glyphs.caption_of(row) == (
        "a water radical glyph meaning: to wash; mandarin xi3, cantonese sai2, "
        "japanese sen sai, korean sey"
    )
    assert glyphs.radical_name("120'.3") == "simplified silk"
    assert glyphs.numbered_pinyin("lǜ") == "lv4" and glyphs.numbered_pinyin("de") == "de"


def test_missing_sources_name_the_package(tmp_path):
    with pytest.raises(FileNotFoundError, match="data.corpus.font=.*no such font"):
        glyphs.find_font(tmp_path / "nope.ttc")
    with pytest.raises(FileNotFoundError, match="data.corpus.unihan="):
        glyphs.find_unihan(tmp_path / "nope.xml")


def test_missing_sources_fallback_message(monkeypatch, tmp_path):
    monkeypatch.setattr(glyphs, "_package_file", lambda *a: None)
    monkeypatch.setattr(glyphs, "DEBIAN_FONT", tmp_path / "none.ttc")
    monkeypatch.setattr(glyphs, "DEBIAN_UNIHAN", tmp_path)
    with pytest.raises(FileNotFoundError, match="apt-get install fonts-noto-cjk"):
        glyphs.find_font()
    with pytest.raises(FileNotFoundError, match="apt-get install unicode-data"):
        glyphs.find_unihan()


def test_unihan_text_files_read_like_the_xml(tmp_path):
    """Debian's unicode-data ships Unihan_*.txt.bz2; the same fields come out as from the XML."""
    import bz2

    (tmp_path / "Unihan_Readings.txt.bz2").write_bytes(
        bz2.compress(
            (
                "# comment\nU+6D17\tkDefinition\twash\n"
                "U+6D17\tkMandarin\txǐ\nU+4E00\tkMandarin\tyī\n"
            ).encode()
        )
    )
    (tmp_path / "Unihan_IRGSources.txt").write_text("U+6D17\tkRSUnicode\t85.6\n", encoding="utf-8")
    assert glyphs.read_unihan(tmp_path) == {
        0x6D17: {"kDefinition": "wash", "kMandarin": "xǐ", "kRSUnicode": "85.6"}
    }


@needs_sources
def test_too_large_a_corpus_is_refused(tmp_path):
    with pytest.raises(ValueError, match="exceeds the .* glyphs with distinct captions"):
        _build(tmp_path, 10**6)


@needs_sources
def test_load_corpus_builds_glyphs_once(make_cfg, tmp_path):
    cfg = make_cfg("data=glyphs", "data.corpus.size=240")
    first = build(cfg.data, "data").member_corpus(tmp_path / "cache")
    mtime = first.shards[0].stat().st_mtime
    second = build(cfg.data, "data").member_corpus(tmp_path / "cache")
    assert second.shards[0].stat().st_mtime == mtime and second.fingerprint == first.fingerprint
    assert len(second.index) == 240 and first.shards[0].parent.name.startswith("glyphs-")
    with pytest.raises(ValueError, match="data.nonmembers='ood': glyphs has no shifted sibling"):
        build(make_cfg("data=glyphs", "data.nonmembers=ood").data, "data")


@needs_sources
@pytest.mark.slow
def test_glyph_job_end_to_end(make_cfg):
    from mia.pipeline import run

    res = json.loads(run(make_cfg("data=glyphs")).read_text())
    assert res["target"]["size"] == 300 and res["data"]["corrupt_skipped"] == 0
    assert (
        res["data"]["corpus"] == "glyphs" and res["data"]["dedup_dropped"] == 0
    )  # distinct captions
    assert 0 <= res["attacks"]["csa"]["auc"] <= 1
