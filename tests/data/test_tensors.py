"""mia/data/tensors.py: the tensor path gives the PIL path's tensors bit for bit, or is not taken."""
import io

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from mia.data.generated import jpeg
from mia.data.shards import decode_image
from mia.data.synthetic import make_sample
from mia.data.tensors import TensorPreprocess, _jpeg_components


def encoded(image, fmt, **kw):
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("size", [32, 224])
def test_corpus_jpegs_give_the_pil_paths_tensors(size):
    preprocess = open_clip.image_transform(size, is_train=False)
    fast = TensorPreprocess(preprocess)
    assert fast.size == size
    for i in range(20):
        data = jpeg(make_sample(i, seed=0, image_size=size)[0])
        assert torch.equal(fast(data), preprocess(decode_image(data))), i


def test_other_images_take_the_pil_path_and_agree():
    preprocess = open_clip.image_transform(32, is_train=False)
    fast = TensorPreprocess(preprocess)
    rgb = make_sample(0, seed=0, image_size=48)[0]
    cases = {"png": encoded(rgb.resize((32, 32)), "PNG"),
             "other size": jpeg(rgb),
             "grey jpeg": encoded(rgb.resize((32, 32)).convert("L"), "JPEG"),
             "cmyk jpeg": encoded(rgb.resize((32, 32)).convert("CMYK"), "JPEG")}
    assert _jpeg_components(cases["cmyk jpeg"]) == 4 and _jpeg_components(cases["grey jpeg"]) == 1
    assert _jpeg_components(cases["png"]) is None
    for name, data in cases.items():
        assert torch.equal(fast(data), preprocess(decode_image(data))), name


def test_a_transform_of_another_shape_is_applied_as_it_is():
    train = open_clip.image_transform(32, is_train=True)
    fast = TensorPreprocess(train)
    assert fast.size is None
    data = jpeg(Image.fromarray(np.zeros((32, 32, 3), np.uint8)))
    torch.manual_seed(0)
    expected = train(decode_image(data))
    torch.manual_seed(0)
    assert torch.equal(fast(data), expected)


def test_a_batch_finished_at_once_is_the_samples_finished_one_by_one():
    preprocess = open_clip.image_transform(32, is_train=False)
    fast = TensorPreprocess(preprocess)
    data = [jpeg(make_sample(i, seed=0)[0]) for i in range(8)] + [encoded(make_sample(9, seed=0)[0], "PNG")]
    decoded = [fast.decode(d) for d in data]
    assert [d.dtype for d in decoded] == [torch.uint8] * 8 + [torch.float32]
    expected = torch.stack([preprocess(decode_image(d)) for d in data])
    assert torch.equal(fast.stack(decoded), expected) and torch.equal(fast.stack(decoded[:8]), expected[:8])
