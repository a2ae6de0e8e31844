"""mia/data/tensors.py: the tensor path gives the PIL path's tensors bit for bit, or is not
taken."""

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
    cases = {
        "png": encoded(rgb.resize((32, 32)), "PNG"),
        "other size": jpeg(rgb),
        "grey jpeg": encoded(rgb.resize((32, 32)).convert("L"), "JPEG"),
        "cmyk jpeg": encoded(rgb.resize((32, 32)).convert("CMYK"), "JPEG"),
    }
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
    data = [jpeg(make_sample(i, seed=0)[0]) for i in range(8)] + [
        encoded(make_sample(9, seed=0)[0], "PNG")
    ]
    decoded = [fast.decode(d) for d in data]
    assert [d.dtype for d in decoded] == [torch.uint8] * 8 + [torch.float32]
    expected = torch.stack([preprocess(decode_image(d)) for d in data])
    assert torch.equal(fast.stack(decoded), expected) and torch.equal(
        fast.stack(decoded[:8]), expected[:8]
    )


def test_a_batch_shipped_as_uint8_and_finished_where_it_arrives_is_the_workers_batch_bit_for_bit():
    """stack_raw ships the tensor path's batches as uint8; finish, run where the batch arrives (the
    training device), gives the floats of finishing in the worker. A batch with a PIL-path image
    ships as floats, finished in the worker as before."""
    preprocess = open_clip.image_transform(32, is_train=False)
    fast = TensorPreprocess(preprocess)
    data = [jpeg(make_sample(i, seed=0)[0]) for i in range(8)] + [
        encoded(make_sample(9, seed=0)[0], "PNG")
    ]
    decoded = [fast.decode(d) for d in data]
    shipped = fast.stack_raw(decoded[:8])
    assert shipped.dtype == torch.uint8 and shipped.shape == (8, 3, 32, 32)
    assert torch.equal(fast.finish(shipped), fast.stack(decoded[:8]))
    mixed = fast.stack_raw(decoded)
    assert mixed.dtype == torch.float32 and torch.equal(mixed, fast.stack(decoded))


@pytest.mark.gpu
def test_a_uint8_batch_finished_on_the_gpu_is_the_cpus_bit_for_bit():
    preprocess = open_clip.image_transform(224, is_train=False)
    fast = TensorPreprocess(preprocess)
    shipped = fast.stack_raw(
        [fast.decode(jpeg(make_sample(i, seed=0, image_size=224)[0])) for i in range(8)]
    )
    assert shipped.dtype == torch.uint8
    assert torch.equal(fast.finish(shipped.cuda()).cpu(), fast.finish(shipped))
