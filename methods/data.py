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


# family name -> batch transform (float images in [-1, 1], CPU generator) -> images
AUGMENTATIONS: dict[str, Callable[[torch.Tensor, torch.Generator], torch.Tensor]] = {
    "none": _no_augmentation,
}


def resize_uint8(x: torch.Tensor, resolution: int) -> torch.Tensor:
    """Bilinear (antialiased when shrinking) resize of uint8 images, rounded back to uint8."""
    if x.shape[-1] == resolution and x.shape[-2] == resolution:
        return x
    y = F.interpolate(x.float(), size=(resolution, resolution), mode="bilinear",
                      align_corners=False, antialias=resolution < x.shape[-1])
    return y.round_().clamp_(0, 255).to(torch.uint8)


class DeviceData:
    """Train / val / test tensors on one device, at one resolution."""

    def __init__(self, dataset: ImageDataset, resolution: int, device: torch.device):
        self.info = dataset.info
        self.device = torch.device(device)
        self.resolution = resolution
        self.channels_last = self.device.type == "cuda"

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
            x = self.to_float(self.x_train[idx])
            yield (self.augment(x, gen) if train else x), self.y_train[idx]
