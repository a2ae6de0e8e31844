"""The embedded corpus: procedural image-caption pairs, deterministic per (seed, index).

Each pair has shared structure a CLIP can generalise from (shapes, colours, sizes, positions,
background) and per-sample detail it can only memorise: a random block texture in the image and
made-up name words in the caption, the way web alt-text carries names and unique words. Both are
drawn from the same per-sample generator, so the texture is unrelated to the words: a model can
only tie them together by memorising the pair.

`style="shifted"` is a sibling corpus with other colours, textures and caption phrasing; it plays
"another corpus" for the out-of-distribution (OOD) non-member condition. `mixed_sample` mixes the
two generators pair by pair for the shift continuum between the conditions (data.shift,
docs/design.md §2.6).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from mia.validate import ConfigError

STYLES = ("iid", "shifted")
SHIFT_PARTS = (
    "image",
    "caption",
)  # what data.shift may swap for the shifted sibling's, in this order
_COIN_STREAM = len(
    STYLES
)  # the swap coins' RNG stream; a style's samples use stream STYLES.index(style)
# uid prefix of a pair by what was swapped: both parts make it the shifted sibling's own pair
_SWAP_PREFIX = {("image",): "mxi", ("caption",): "mxc", SHIFT_PARTS: "ood"}

COLOURS = {
    "iid": {
        "red": (215, 40, 40),
        "green": (40, 170, 60),
        "blue": (40, 70, 215),
        "yellow": (235, 215, 40),
        "purple": (130, 50, 170),
        "orange": (240, 130, 30),
        "cyan": (40, 200, 215),
        "pink": (235, 120, 180),
        "white": (240, 240, 240),
        "black": (20, 20, 20),
        "gray": (128, 128, 128),
        "brown": (120, 75, 35),
    },
    "shifted": {  # muted, pastel and dark tones the iid palette never uses
        "teal": (0, 128, 128),
        "lavender": (190, 170, 230),
        "mint": (170, 235, 200),
        "coral": (250, 150, 120),
        "navy": (20, 30, 90),
        "olive": (110, 110, 30),
        "maroon": (110, 20, 40),
        "beige": (225, 210, 175),
        "slate": (90, 105, 120),
        "peach": (250, 205, 165),
        "plum": (140, 70, 110),
        "khaki": (190, 180, 120),
    },
}
SHAPES = ("circle", "square", "triangle", "diamond", "cross", "ring")
SIZES = {"small": 0.14, "large": 0.24}
ROWS, COLS = ("top", "middle", "bottom"), ("left", "center", "right")
JPEG_QUALITY = 95  # of the shards' images; generated pairs go through the same encoding
_SYLLABLES = [
    c + v for c in "bdfgklmnprstvz" for v in "aeiou"
]  # 70 syllables -> ~340k 3-syllable words


def position_name(row: int, col: int) -> str:
    if row == 1 and col == 1:
        return "center"
    if row == 1:
        return COLS[col]
    if col == 1:
        return ROWS[row]
    return f"{ROWS[row]} {COLS[col]}"


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


def make_sample(
    index: int,
    *,
    seed: int,
    style: str = "iid",
    image_size: int = 32,
    detail_strength: float = 40.0,
    detail_grid: int = 8,
    name_words: int = 2,
    redraw: int = 0,
):
    """One (image, caption, meta) triple; the same arguments always give the same pair. `redraw` > 0
    draws another pair for the same index (a generated member that collided with a non-member,
    mia/data/generated.py); 0 is the corpus's own pair."""
    if style not in STYLES:
        raise ConfigError("data.style", need=f"={style!r}: choose one of {STYLES}")
    rng = np.random.default_rng([seed, STYLES.index(style), index] + ([redraw] if redraw else []))
    colours = COLOURS[style]
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
        shape, size = SHAPES[rng.integers(len(SHAPES))], list(SIZES)[rng.integers(2)]
        cy = (row + 0.5) * s / 3 + rng.uniform(-0.06, 0.06) * s
        cx = (col + 0.5) * s / 3 + rng.uniform(-0.06, 0.06) * s
        img[_mask(shape, yy, xx, cy, cx, SIZES[size] * s)] = colours[colour]
        objects.append((size, colour, shape, position_name(row, col)))

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
        parts = [
            f"a {size} {colour} {shape} {'in the' if pos == 'center' else 'on the'} {pos}"
            for size, colour, shape, pos in objects
        ]
        caption = f"{' and '.join(parts)} on a {bg} background, photo by {people}"
    else:
        parts = [
            f"one {shape} ({size}, {colour}) placed {pos}" for size, colour, shape, pos in objects
        ]
        caption = (
            f"Image showing {len(objects)} item(s): {'; '.join(parts)}. Backdrop: {bg}. Credit: "
            f"{people.title()}"
        )
    uid = _uid("syn" if style == "iid" else "ood", seed, index)
    meta = {
        "uid": uid,
        "url": f"https://{style}.synthetic.invalid/{seed}/{index}.jpg",
        "caption": caption,
        "key": f"{index:09d}",
        "width": s,
        "height": s,
    }
    return Image.fromarray(img), caption, meta


def _uid(prefix: str, seed: int, index: int) -> str:
    return f"{prefix}{seed:04d}{index:09d}"


def sample_uid(seed: int, index: int) -> str:
    """The uid of pair `index` of the i.i.d. corpus."""
    return _uid("syn", seed, index)


def sample_index(uid: str) -> int:
    """The corpus index a uid of this generator names (its last nine digits)."""
    return int(uid[-9:])


def replaced_uid(uid: str) -> str:
    """The uid of the i.i.d. pair that a pair of `write_swaps` stands in for."""
    return "syn" + uid[3:]


def swaps(index: int, *, seed: int, shift: float, shift_parts) -> tuple:
    """The parts of pair `index` that data.shift swaps for the shifted sibling's: each part named in
    `shift_parts` with probability `shift`. One uniform coin per part, drawn whatever `shift_parts`
    says, from a generator of its own: the pair's own draws are untouched, an image-only shift swaps
    the very images a two-part shift swaps, and what a shift swaps, every larger shift swaps too."""
    coins = np.random.default_rng([seed, _COIN_STREAM, index]).random(len(SHIFT_PARTS))
    return tuple(
        part
        for part, coin in zip(SHIFT_PARTS, coins, strict=True)
        if part in shift_parts and coin < shift
    )


def mixed_sample(index: int, *, seed: int, shift: float, shift_parts, **sample_kw):
    """Pair `index` of the i.i.d. corpus with the parts `swaps` names taken from the shifted
    sibling's pair `index`. Nothing swapped: the i.i.d. pair itself, uid included. A swapped pair
    gets a uid of its own (its features are cached by uid) and the URL of the style its image comes
    from."""
    swapped = swaps(index, seed=seed, shift=shift, shift_parts=shift_parts)
    if swapped == SHIFT_PARTS:
        return make_sample(index, seed=seed, style="shifted", **sample_kw)
    image, caption, meta = make_sample(index, seed=seed, style="iid", **sample_kw)
    if not swapped:
        return image, caption, meta
    other_image, other_caption, other_meta = make_sample(
        index, seed=seed, style="shifted", **sample_kw
    )
    if "image" in swapped:
        image, meta = other_image, {**meta, "url": other_meta["url"]}
    else:
        caption = other_caption
    return (
        image,
        caption,
        {**meta, "uid": _uid(_SWAP_PREFIX[swapped], seed, index), "caption": caption},
    )


def write_corpus(
    out_dir: Path,
    size: int,
    *,
    shard_size: int = 2000,
    jpeg_quality: int = JPEG_QUALITY,
    **sample_kw,
) -> Path:
    """Write `size` samples as webdataset shards in the img2dataset / DataComp layout.

    Writes `{key}.jpg`, `{key}.txt`, `{key}.json` per sample and `sizes.json` last, so a folder
    with `sizes.json` is complete. The caller owns locking and atomic placement (see mia.cache).
    """
    samples = (make_sample(i, **sample_kw) for i in range(size))
    return _write_shards(
        out_dir, samples, size, shard_size, jpeg_quality, f"corpus {sample_kw.get('style', 'iid')}"
    )


def write_swaps(
    out_dir: Path,
    size: int,
    *,
    shard_size: int,
    shift: float,
    shift_parts,
    seed: int,
    jpeg_quality: int = JPEG_QUALITY,
    **sample_kw,
) -> Path:
    """Write, in index order, the pairs of the first `size` whose parts data.shift swaps
    (`mixed_sample`), and only those: the others are the member corpus's own pairs. Nothing swapped
    writes no shard."""
    chosen = [i for i in range(size) if swaps(i, seed=seed, shift=shift, shift_parts=shift_parts)]
    samples = (
        mixed_sample(i, seed=seed, shift=shift, shift_parts=shift_parts, **sample_kw)
        for i in chosen
    )
    return _write_shards(
        out_dir, samples, len(chosen), shard_size, jpeg_quality, f"corpus shift={shift:g}"
    )


def _write_shards(
    out_dir: Path, samples, count: int, shard_size: int, jpeg_quality: int, desc: str
) -> Path:
    """`count` (image, caption, meta) triples into NNNNN.tar shards of `shard_size`, then
    `sizes.json`."""
    import webdataset as wds

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    samples, sizes = iter(samples), {}
    bar = tqdm(total=count, desc=desc, unit="pair")
    for shard_no, start in enumerate(range(0, count, shard_size)):
        name = f"{shard_no:05d}.tar"
        n = min(start + shard_size, count) - start
        with wds.TarWriter(str(out_dir / name)) as sink:
            for _ in range(n):
                image, caption, meta = next(samples)
                buf = io.BytesIO()
                image.save(buf, format="JPEG", quality=jpeg_quality)
                sink.write(
                    {
                        "__key__": meta["key"],
                        "jpg": buf.getvalue(),
                        "txt": caption,
                        "json": json.dumps(meta),
                    }
                )
                bar.update()
        sizes[name] = n
    bar.close()
    (out_dir / "sizes.json").write_text(json.dumps(sizes, indent=1))
    return out_dir
