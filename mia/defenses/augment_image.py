"""Image augmentation at training time: each training image, every time it is drawn, is shifted by
a random translation (reflected at the border) and gets Gaussian pixel noise, so the model sees a
slightly different image each epoch and memorises its texture less."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mia.defenses.base import Defense, check
from mia.validate import is_number


class AugmentImage(Defense):
    name = "augment_image"
    strength = ("max_shift", "noise_std")
    trains = augments = True

    def __init__(self, max_shift: float, noise_std: float):
        check(
            "max_shift",
            max_shift,
            is_number(max_shift) and 0 <= max_shift <= 0.5,
            "a fraction in [0, 0.5]",
        )
        check("noise_std", noise_std, is_number(noise_std) and noise_std >= 0, "a number >= 0")
        super().__init__(max_shift=max_shift, noise_std=noise_std)

    def augment(self, images, tokens, generator):
        n = images.shape[0]
        # affine_grid's translation is in [-1, 1] units of the half-width: a shift of f image widths
        # is 2f
        shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * 2 * self.settings["max_shift"]
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0] = theta[:, 1, 1] = 1
        theta[:, :, 2] = shift
        grid = F.affine_grid(theta.to(images), list(images.shape), align_corners=False)
        out = F.grid_sample(
            images, grid, mode="bilinear", padding_mode="reflection", align_corners=False
        )
        noise = torch.randn(images.shape, generator=generator).to(images)
        return out + self.settings["noise_std"] * noise, tokens
