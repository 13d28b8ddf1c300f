"""Classifier networks, all trained from scratch.

- `cnn`: a small CNN for CPU-scale runs (conv32-conv64-fc128, about 0.05M parameters at 8 px), with the
  normalization layer an option.
- `resnet18` / `resnet50`: torchvision's ResNets, the paper's classifier. For inputs of at most
  64 px the stem is a 3x3 stride-1 convolution with no max-pool (the CIFAR variant used by the
  paper), otherwise torchvision's 7x7 stride-2 stem with max-pool.

Normalization: "batch" (as in the paper), "group" (GroupNorm, recommended for non-IID FL
because batch statistics differ per client; Hsieh et al., ICML 2020), or "none".
"""
from __future__ import annotations

import hashlib

import torch
from torch import nn

MODELS = ("cnn", "resnet18", "resnet50")
NORMS = ("batch", "group", "none")


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(min(32, channels // 4) or 1, channels)
    return nn.Identity()


class SmallCNN(nn.Module):
    def __init__(self, in_channels: int, n_classes: int, resolution: int, norm: str = "group"):
        super().__init__()
        side = resolution // 4
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1), _norm(norm, 32), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), _norm(norm, 64), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(64 * side * side, 128), nn.ReLU(inplace=True),
            nn.Linear(128, n_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _resnet(depth: int, in_channels: int, n_classes: int, resolution: int, norm: str) -> nn.Module:
    from torchvision.models import resnet18, resnet50

    norm_layer = {
        "batch": nn.BatchNorm2d,
        "group": lambda c: nn.GroupNorm(32, c),
        "none": lambda c: nn.Identity(),
    }[norm]
    builder = {18: resnet18, 50: resnet50}[depth]
    model = builder(weights=None, num_classes=n_classes, norm_layer=norm_layer)
    if resolution <= 64:
        model.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    elif in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
    return model


def build_model(
    name: str, in_channels: int, n_classes: int, resolution: int, norm: str = "group"
) -> nn.Module:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid choices: {', '.join(MODELS)}")
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; valid choices: {', '.join(NORMS)}")
    if name == "cnn":
        if resolution % 4:
            raise ValueError(f"cnn needs a resolution divisible by 4, got {resolution}")
        return SmallCNN(in_channels, n_classes, resolution, norm)
    depth = {"resnet18": 18, "resnet50": 50}[name]
    return _resnet(depth, in_channels, n_classes, resolution, norm)


def embed(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The classifier's penultimate features (the input of its output layer)."""
    if isinstance(model, SmallCNN):
        return model.head[:-1](model.features(x))
    m = model  # a torchvision ResNet: its forward up to `fc`
    x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
    x = m.layer4(m.layer3(m.layer2(m.layer1(x))))
    return torch.flatten(m.avgpool(x), 1)


def output_layer(model: nn.Module) -> tuple[str, nn.Module]:
    """The name and module of the classifier's output layer."""
    return ("head.3", model.head[3]) if isinstance(model, SmallCNN) else ("fc", model.fc)


def replace_output_layer(model: nn.Module, layer: nn.Module) -> None:
    if isinstance(model, SmallCNN):
        model.head[3] = layer
    else:
        model.fc = layer


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def weights_sha256(models) -> str:
    """A fingerprint of final classifier weights: equal fingerprints mean bitwise-equal weights."""
    h = hashlib.sha256()
    for m in models:
        for name, t in m.state_dict().items():
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
