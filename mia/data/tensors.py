"""Image bytes to model-ready tensors without PIL where that changes no pixel.

open_clip's eval transform is Resize (bicubic, PIL), CenterCrop, RGB, ToTensor, Normalize. For a
3-component JPEG already at the model's input size, Resize and CenterCrop do nothing, and the rest
is tensor arithmetic: `TensorPreprocess` then decodes with torchvision.io (libjpeg-turbo, as PIL's
decoder) straight to a uint8 tensor and scales and normalises it. That gives bit for bit the tensor
of the PIL path (tests/data/test_tensors.py), at a fraction of the cost. Any other image (PNG, CMYK
or greyscale JPEG, another size, a JPEG torchvision refuses) takes the PIL path unchanged. Resizing
stays with PIL, so what a CLIP trained elsewhere sees is what open_clip shows it.
"""

from __future__ import annotations

import torch
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms import CenterCrop, Normalize, Resize

from mia.data.shards import decode_image


def _jpeg_components(data: bytes) -> int | None:
    """The number of colour components a JPEG's frame header declares, or None if it is no JPEG."""
    if data[:2] != b"\xff\xd8":
        return None
    at = 2
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            at += 2
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # a start of frame
            return data[at + 9] if at + 9 < len(data) else None
        at += 2 + int.from_bytes(data[at + 2 : at + 4], "big")
    return None


class TensorPreprocess:
    """`preprocess` (open_clip's eval transform) applied to image bytes, on tensors where that is
    exact. A transform of any other shape is applied as it is, after PIL decoding."""

    def __init__(self, preprocess):
        self.preprocess, self.size = preprocess, None
        steps = list(getattr(preprocess, "transforms", []))
        resize = [t for t in steps if isinstance(t, Resize)]
        crop = [t for t in steps if isinstance(t, CenterCrop)]
        norm = [t for t in steps if isinstance(t, Normalize)]
        if len(resize) == len(crop) == len(norm) == 1 and len(steps) == 5:
            side = (
                resize[0].size[0] if isinstance(resize[0].size, (list, tuple)) else resize[0].size
            )
            if tuple(crop[0].size) == (side, side):
                self.size = side
                self.mean = torch.as_tensor(norm[0].mean, dtype=torch.float32).view(-1, 1, 1)
                self.std = torch.as_tensor(norm[0].std, dtype=torch.float32).view(-1, 1, 1)

    def decode(self, data: bytes) -> torch.Tensor:
        """The image as a uint8 tensor where the tensor path applies (`stack` finishes it, a whole
        batch at a time), else as the PIL path's float tensor."""
        if self.size is not None and _jpeg_components(data) == 3:
            try:
                image = decode_jpeg(
                    torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB
                )
            except RuntimeError:
                image = None
            if image is not None and image.shape[1:] == (self.size, self.size):
                return image
        return self.preprocess(decode_image(data))

    def finish(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images (one or a batch, on any device) as ToTensor and Normalize leave them: the
        same operations, in the same order, so the same floats (in place after the one
        conversion)."""
        device = images.device
        # 255 as a tensor on the device: CUDA divides by a host scalar as a multiplication by its
        # reciprocal, which can differ from ToTensor's division in the last bit
        scale = torch.tensor(255, dtype=torch.float32, device=device)
        return (
            images.to(torch.float32)
            .div_(scale)
            .sub_(self.mean.to(device))
            .div_(self.std.to(device))
        )

    def stack(self, decoded) -> torch.Tensor:
        """A batch of `decode`'s results as one float tensor."""
        if all(d.dtype == torch.uint8 for d in decoded):
            return self.finish(
                torch.stack(decoded)
            )  # a quarter of the bytes to stack, one pass of arithmetic
        return torch.stack([self.finish(d) if d.dtype == torch.uint8 else d for d in decoded])

    def stack_raw(self, decoded) -> torch.Tensor:
        """A batch of `decode`'s results as one tensor to ship: uint8 where every image took the
        tensor path (`finish` it where it arrives: a quarter of the bytes through pipes and to the
        GPU), else as `stack` makes it."""
        if all(d.dtype == torch.uint8 for d in decoded):
            return torch.stack(decoded)
        return self.stack(decoded)

    def __call__(self, data: bytes) -> torch.Tensor:
        image = self.decode(data)
        return self.finish(image) if image.dtype == torch.uint8 else image
