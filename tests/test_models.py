import pytest
import torch

from bench.methods.models import build_model, count_parameters

# pinned: a change to an architecture must be deliberate
PINNED = {
    ("cnn", 1, 10, 8): 53_194,
    ("cnn", 3, 10, 32): 545_290,
    ("resnet18", 3, 10, 32): 11_173_962,
    ("resnet50", 3, 10, 32): 23_520_842,
    ("resnet50", 3, 8, 224): 23_524_424,
}


@pytest.mark.parametrize("key,count", PINNED.items())
@pytest.mark.parametrize("norm", ["batch", "group"])
def test_parameter_counts(key, count, norm):
    name, c, k, res = key
    assert count_parameters(build_model(name, c, k, res, norm)) == count


def test_small_input_resnet_has_cifar_stem():
    m = build_model("resnet18", 3, 10, 32, "batch")
    assert m.conv1.kernel_size == (3, 3) and m.conv1.stride == (1, 1)
    assert isinstance(m.maxpool, torch.nn.Identity)
    big = build_model("resnet18", 3, 10, 224, "batch")
    assert big.conv1.kernel_size == (7, 7)
    assert m(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_group_norm_option_has_no_batch_norm():
    m = build_model("resnet18", 3, 10, 32, "group")
    assert not any(isinstance(x, torch.nn.BatchNorm2d) for x in m.modules())
    assert any(isinstance(x, torch.nn.GroupNorm) for x in m.modules())
