"""The embedded corpus: procedural image-caption pairs, deterministic per (seed, index).

Each pair has shared structure a CLIP can generalise from (shapes, colours, sizes, positions,
background) and per-sample detail it can only memorise: a random block texture in the image and
made-up name words in the caption, the way web alt-text carries names and unique words. Both are
drawn from the same per-sample generator, so the texture is unrelated to the words: a model can
only tie them together by memorising the pair.

`style="shifted"` is a sibling corpus with other colours, textures and caption phrasing; it plays
"another corpus" for the out-of-distribution (OOD) non-member condition.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

STYLES = ("iid", "shifted")

_COLOURS = {
    "iid": {
        "red": (215, 40, 40), "green": (40, 170, 60), "blue": (40, 70, 215), "yellow": (235, 215, 40),
        "purple": (130, 50, 170), "orange": (240, 130, 30), "cyan": (40, 200, 215), "pink": (235, 120, 180),
        "white": (240, 240, 240), "black": (20, 20, 20), "gray": (128, 128, 128), "brown": (120, 75, 35),
    },
    "shifted": {  # muted, pastel and dark tones the iid palette never uses
        "teal": (0, 128, 128), "lavender": (190, 170, 230), "mint": (170, 235, 200), "coral": (250, 150, 120),
        "navy": (20, 30, 90), "olive": (110, 110, 30), "maroon": (110, 20, 40), "beige": (225, 210, 175),
        "slate": (90, 105, 120), "peach": (250, 205, 165), "plum": (140, 70, 110), "khaki": (190, 180, 120),
    },
}
_SHAPES = ("circle", "square", "triangle", "diamond", "cross", "ring")
_SIZES = {"small": 0.14, "large": 0.24}
_ROWS, _COLS = ("top", "middle", "bottom"), ("left", "center", "right")
_SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]  # 70 syllables -> ~340k 3-syllable words


def _position_name(row: int, col: int) -> str:
    if row == 1 and col == 1:
        return "center"
    if row == 1:
        return _COLS[col]
    if col == 1:
        return _ROWS[row]
    return f"{_ROWS[row]} {_COLS[col]}"


def _mask(shape: str, yy, xx, cy, cx, r):
    dy, dx = yy - cy, xx - cx
    if shape == "circle":
        return dy**2 + dx**2 <= r**2
    if shape == "square":
        return (abs(dy) <= r * 0.85) & (abs(dx) <= r * 0.85)
    if shape == "triangle":
        return (dy <= r * 0.8) & (dy >= -r) & (abs(dx) <= (dy + r) * 0.6)
    if shape == "diamond":
        return abs(dy) + abs(dx) <= r
    if shape == "cross":
        return ((abs(dy) <= r * 0.3) & (abs(dx) <= r)) | ((abs(dx) <= r * 0.3) & (abs(dy) <= r))
    if shape == "ring":
        d2 = dy**2 + dx**2
        return (d2 <= r**2) & (d2 >= (0.55 * r) ** 2)
    raise ValueError(shape)


def _name(rng) -> str:
    return "".join(rng.choice(_SYLLABLES, size=rng.integers(2, 4)))


def make_sample(index: int, *, seed: int, style: str = "iid", image_size: int = 32,
                detail_strength: float = 40.0, detail_grid: int = 8, name_words: int = 2):
    """One (image, caption, meta) triple; the same arguments always give the same pair."""
    if style not in STYLES:
        raise ValueError(f"data.style={style!r}: choose one of {STYLES}")
    rng = np.random.default_rng([seed, STYLES.index(style), index])
    colours = _COLOURS[style]
    names = list(colours)
    s = image_size
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) + 0.5

    bg = names[rng.integers(len(names))]
    img = np.empty((s, s, 3), np.float32)
    img[:] = colours[bg]
    objects = []
    cells = rng.permutation(9)[: rng.integers(1, 3)]
    for cell in cells:
        row, col = divmod(int(cell), 3)
        colour = names[rng.integers(len(names))]
        while colour == bg:
            colour = names[rng.integers(len(names))]
        shape, size = _SHAPES[rng.integers(len(_SHAPES))], list(_SIZES)[rng.integers(2)]
        cy = (row + 0.5) * s / 3 + rng.uniform(-0.06, 0.06) * s
        cx = (col + 0.5) * s / 3 + rng.uniform(-0.06, 0.06) * s
        img[_mask(shape, yy, xx, cy, cx, _SIZES[size] * s)] = colours[colour]
        objects.append((size, colour, shape, _position_name(row, col)))

    # Per-sample detail: a random texture only memorisation can tie to this caption.
    if style == "iid":
        blocks = rng.uniform(-1, 1, (detail_grid, detail_grid, 3))
        texture = np.kron(blocks, np.ones((s // detail_grid + 1, s // detail_grid + 1, 1)))[:s, :s]
    else:  # shifted corpus: stripes instead of blocks
        freq, phase = rng.uniform(0.2, 0.8, 3), rng.uniform(0, 2 * np.pi, 3)
        angle = rng.uniform(0, np.pi)
        t = xx * np.cos(angle) + yy * np.sin(angle)
        texture = np.sin(t[..., None] * freq + phase)
    img = np.clip(img + detail_strength * texture, 0, 255).astype(np.uint8)

    people = " ".join(_name(rng) for _ in range(name_words))
    if style == "iid":
        parts = [f"a {size} {colour} {shape} {'in the' if pos == 'center' else 'on the'} {pos}"
                 for size, colour, shape, pos in objects]
        caption = f"{' and '.join(parts)} on a {bg} background, photo by {people}"
    else:
        parts = [f"one {shape} ({size}, {colour}) placed {pos}" for size, colour, shape, pos in objects]
        caption = f"Image showing {len(objects)} item(s): {'; '.join(parts)}. Backdrop: {bg}. Credit: {people.title()}"
    uid = f"{'syn' if style == 'iid' else 'ood'}{seed:04d}{index:09d}"
    meta = {"uid": uid, "url": f"https://{style}.synthetic.invalid/{seed}/{index}.jpg", "caption": caption,
            "key": f"{index:09d}", "width": s, "height": s}
    return Image.fromarray(img), caption, meta


def write_corpus(out_dir: Path, size: int, *, shard_size: int = 2000, jpeg_quality: int = 95, **sample_kw) -> Path:
    """Write `size` samples as webdataset shards in the img2dataset / DataComp layout.

    Writes `{key}.jpg`, `{key}.txt`, `{key}.json` per sample and `sizes.json` last, so a folder
    with `sizes.json` is complete. The caller owns locking and atomic placement (see mia.cache).
    """
    import webdataset as wds

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sizes = {}
    bar = tqdm(total=size, desc=f"corpus {sample_kw.get('style', 'iid')}", unit="pair")
    for shard_no, start in enumerate(range(0, size, shard_size)):
        name = f"{shard_no:05d}.tar"
        with wds.TarWriter(str(out_dir / name)) as sink:
            for i in range(start, min(start + shard_size, size)):
                image, caption, meta = make_sample(i, **sample_kw)
                buf = io.BytesIO()
                image.save(buf, format="JPEG", quality=jpeg_quality)
                sink.write({"__key__": meta["key"], "jpg": buf.getvalue(), "txt": caption,
                            "json": json.dumps(meta)})
                bar.update()
        sizes[name] = min(start + shard_size, size) - start
    bar.close()
    (out_dir / "sizes.json").write_text(json.dumps(sizes, indent=1))
    return out_dir
