"""Data resident on the device, batched by slicing.

The dataset is moved to the device once, as uint8, resized once to the run's resolution. A
client is an index array; a batch is `x[idx]` converted to float on the device. Augmentation
works on whole batches on the device (families in `AUGMENTATIONS`).
"""
from __future__ import annotations

import copy
from typing import Callable, Iterator

import torch
import torch.nn.functional as F

from ..datasets.base import ImageDataset


def _no_augmentation(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return x


def _draw(gen: torch.Generator, device, fn, *args, **kw) -> torch.Tensor:
    """Random draws are made on the CPU from `gen` (same numbers on every device), then moved."""
    return fn(*args, generator=gen, **kw).to(device)


def crop_flip(x: torch.Tensor, gen: torch.Generator, pad: int = 4) -> torch.Tensor:
    """CIFAR: random crop of a zero-padded image (4 px each side) and horizontal flip."""
    n, c, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad))
    dy = _draw(gen, x.device, torch.randint, 0, 2 * pad + 1, (n,))
    dx = _draw(gen, x.device, torch.randint, 0, 2 * pad + 1, (n,))
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None].expand(n, c, h, w)
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :].expand(n, c, h, w)
    out = xp[torch.arange(n, device=x.device)[:, None, None, None],
             torch.arange(c, device=x.device)[None, :, None, None], rows, cols]
    flip = _draw(gen, x.device, torch.rand, n) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(-1), out)


def flips_rot90(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Orientation-free medical images: horizontal and vertical flips and 90-degree turns
    (the 8 symmetries of the square), one drawn per image."""
    n = x.shape[0]
    k = _draw(gen, x.device, torch.randint, 0, 4, (n,))
    flip = _draw(gen, x.device, torch.rand, n) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    out = x.clone()
    for turns in (1, 2, 3):
        sel = k == turns
        if sel.any():
            out[sel] = torch.rot90(x[sel], turns, dims=(2, 3))
    return out


def affine_jitter(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Retina fundus photographs: rotation up to 10 degrees, shift up to 5 %, scale 0.95-1.05,
    horizontal flip, brightness and contrast jitter of 10 %."""
    n = x.shape[0]
    u = _draw(gen, x.device, torch.rand, n, 6) * 2 - 1  # uniform in [-1, 1]
    angle, scale = u[:, 0] * torch.pi / 18, 1 + 0.05 * u[:, 1]
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    sign = torch.where(u[:, 5] < 0, -1.0, 1.0).to(x.device)  # horizontal flip
    theta = torch.stack([torch.stack([cos * sign, -sin, 0.1 * u[:, 2]], 1),
                         torch.stack([sin * sign, cos, 0.1 * u[:, 3]], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, padding_mode="border", align_corners=False)
    contrast = (1 + 0.1 * u[:, 4])[:, None, None, None].to(x.dtype)
    brightness = (0.1 * u[:, 2].flip(0))[:, None, None, None].to(x.dtype)
    return (out * contrast + brightness).clamp_(-1, 1)


# family name -> batch transform (float images in [-1, 1], CPU generator) -> images
AUGMENTATIONS: dict[str, Callable[[torch.Tensor, torch.Generator], torch.Tensor]] = {
    "none": _no_augmentation,
    "cifar": crop_flip,
    "medical": flips_rot90,
    "retina": affine_jitter,
}


def resize_uint8(x: torch.Tensor, resolution: int) -> torch.Tensor:
    """Bilinear (antialiased when shrinking) resize of uint8 images, rounded back to uint8."""
    if x.shape[-1] == resolution and x.shape[-2] == resolution:
        return x
    y = F.interpolate(x.float(), size=(resolution, resolution), mode="bilinear",
                      align_corners=False, antialias=resolution < x.shape[-1])
    return y.round_().clamp_(0, 255).to(torch.uint8)


# The device types whose training and sampling run under bf16 autocast: GPUs. Evaluation stays
# float32 everywhere (methods/evaluation.py). tests/test_gpu_paths.py adds "cpu" to run that
# path on a machine without a GPU (torch's CPU autocast supports bf16).
MIXED_PRECISION = ("cuda",)


def mixed_precision(device) -> torch.autocast:
    """bf16 autocast on the device types of MIXED_PRECISION, a no-op elsewhere."""
    kind = torch.device(device).type
    return torch.autocast(kind, dtype=torch.bfloat16, enabled=kind in MIXED_PRECISION)


class DeviceData:
    """Train / val / test tensors on one device, at one resolution."""

    def __init__(self, dataset: ImageDataset, resolution: int, device: torch.device):
        self.info = dataset.info
        self.device = torch.device(device)
        self.resolution = resolution
        # NHWC on CUDA (tensor cores) and on the CPU, where oneDNN's convolutions and torch's
        # max-pooling run faster in it: the small CNN's training step takes about 0.78x the
        # time of NCHW at 8 and 32 px at one thread (docs/scaling.md, "Fast paths")
        self.channels_last = self.device.type in ("cuda", "cpu")

        def put(x: torch.Tensor) -> torch.Tensor:
            return resize_uint8(x, resolution).to(self.device)

        self.x_train, self.y_train = put(dataset.x_train), dataset.y_train.to(self.device)
        self.x_val, self.y_val = put(dataset.x_val), dataset.y_val.to(self.device)
        self.x_test, self.y_test = put(dataset.x_test), dataset.y_test.to(self.device)
        self.augment = AUGMENTATIONS[dataset.info.augmentation]

    def with_train(self, x: torch.Tensor, y: torch.Tensor) -> "DeviceData":
        """The same validation and test data with another training set (uint8 at this
        resolution, moved to the device): synthetic, or real plus synthetic."""
        other = copy.copy(self)
        other.x_train = resize_uint8(x, self.resolution).to(self.device)
        other.y_train = y.to(self.device)
        return other

    def place(self, model: torch.nn.Module) -> torch.nn.Module:
        """`model` on this data's device, in its memory format."""
        model = model.to(self.device)
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def to_float(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 [0, 255] -> float [-1, 1]."""
        x = x.float().mul_(2.0 / 255.0).sub_(1.0)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def batches(
        self, indices: torch.Tensor, batch_size: int, gen: torch.Generator, train: bool = True
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch over `indices` (device int64) in a random order drawn from `gen`.

        A final batch of a single sample is merged into the previous one (batch norm cannot
        train on one sample).
        """
        order = indices[torch.randperm(len(indices), generator=gen).to(indices.device)]
        chunks = list(torch.split(order, batch_size))
        if len(chunks) > 1 and len(chunks[-1]) == 1:
            chunks[-2:] = [torch.cat(chunks[-2:])]
        for idx in chunks:
            yield self.batch(idx, gen, train)

    def batch(self, idx: torch.Tensor, gen: torch.Generator,
              train: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Training images `idx` as floats (augmented with `gen` when `train`) and labels."""
        x = self.to_float(self.x_train[idx])
        # an empty batch (DP-SGD's Poisson sampling may draw one) has nothing to augment
        return (self.augment(x, gen) if train and len(idx) else x), self.y_train[idx]
