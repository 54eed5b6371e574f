"""The contract every architecture runs (shapes, gradients, determinism, round trips, export, sizes)."""

from __future__ import annotations

import json

import pytest
import torch

from medseg.models import ARCHITECTURES, build_model
from medseg.models.padding import crop_to, pad_to_multiple

# Small but complete configurations, 2D and 3D, one multi-modal each.
CASES = {
    "unet-2d": ("unet", dict(spatial_dims=2, in_channels=1, num_classes=3, width=0.125)),
    "unet-3d": ("unet", dict(spatial_dims=3, in_channels=2, num_classes=3, width=0.125, norm="instance")),
    "unetpp-2d": ("unetpp", dict(spatial_dims=2, in_channels=2, num_classes=3, width=0.25)),
    "unetpp-3d": ("unetpp", dict(spatial_dims=3, in_channels=1, num_classes=2, width=0.125)),
    "vnet-3d": ("vnet", dict(spatial_dims=3, in_channels=1, num_classes=2, width=0.25)),
    "vnet-2d": ("vnet", dict(spatial_dims=2, in_channels=2, num_classes=3, width=0.25)),
    "attention_unet-3d": ("attention_unet", dict(spatial_dims=3, in_channels=2, num_classes=3, width=0.125)),
    "attention_unet-2d": ("attention_unet", dict(spatial_dims=2, in_channels=1, num_classes=2, width=0.125)),
    # nnU-Net's networks: anisotropic kernels and strides, batch norm and ReLU variants
    "plain_conv_unet-3d": ("plain_conv_unet", dict(
        spatial_dims=3, in_channels=2, num_classes=3, features=[4, 8, 16],
        kernel_sizes=[[1, 3, 3], [3, 3, 3], [3, 3, 3]], strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2]],
        n_conv_per_stage=[2, 2, 1], n_conv_per_stage_decoder=[1, 2])),
    "plain_conv_unet-2d": ("plain_conv_unet", dict(
        spatial_dims=2, in_channels=1, num_classes=2, features=[4, 8, 8, 16], norm="batch", nonlin="relu")),
    "residual_encoder_unet-3d": ("residual_encoder_unet", dict(
        spatial_dims=3, in_channels=1, num_classes=3, features=[4, 8, 16], kernel_sizes=[[1, 3, 3], 3, 3],
        strides=[1, [1, 2, 2], 2], n_blocks_per_stage=[1, 2, 2], n_conv_per_stage_decoder=1)),
    "residual_encoder_unet-2d": ("residual_encoder_unet", dict(
        spatial_dims=2, in_channels=2, num_classes=2, features=[4, 8, 16], n_blocks_per_stage=[1, 1, 2],
        n_conv_per_stage_decoder=[1, 1], norm="batch", nonlin="relu", stem_channels=6)),
}
ODD = {2: (37, 45), 3: (17, 19, 21)}


def _model(case: str) -> torch.nn.Module:
    torch.manual_seed(0)
    name, kwargs = CASES[case]
    return build_model(name, **kwargs)


def _input(model, batch: int = 2) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(batch, model.in_channels, *ODD[model.spatial_dims])


def _padded_forward(model, x: torch.Tensor) -> torch.Tensor:
    padded, shape = pad_to_multiple(x, model.size_divisor)
    return crop_to(model(padded), shape)


def test_every_architecture_has_a_contract_case():
    assert {name for name, _ in CASES.values()} == set(ARCHITECTURES)


def test_unknown_architecture_lists_valid_names():
    with pytest.raises(KeyError) as err:
        build_model("unet3plus")
    for name in ARCHITECTURES:
        assert name in str(err.value)


@pytest.mark.parametrize("case", CASES)
def test_forward_shape_on_odd_sizes(case):
    model = _model(case).eval()
    x = _input(model)
    with torch.no_grad():
        y = _padded_forward(model, x)
    assert y.shape == (2, model.num_classes, *ODD[model.spatial_dims])
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("case", CASES)
def test_backward_reaches_every_parameter(case):
    model = _model(case).train()
    y = _padded_forward(model, _input(model))
    target = torch.randint(0, model.num_classes, (y.shape[0], *y.shape[2:]))
    torch.nn.functional.cross_entropy(y, target).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    # UNet++ trains all heads through forward_heads; forward alone reaches the head of its prune level only.
    if CASES[case][0] == "unetpp":
        missing = [n for n in missing if "head" not in n]
    assert not missing
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("case", CASES)
def test_eval_is_deterministic(case):
    model = _model(case).eval()
    x = _input(model, batch=1)
    with torch.no_grad():
        assert torch.equal(_padded_forward(model, x), _padded_forward(model, x))


@pytest.mark.parametrize("case", CASES)
def test_state_dict_and_config_round_trip(case):
    name, _ = CASES[case]
    model = _model(case).eval()
    config = json.loads(json.dumps(model.config))
    torch.manual_seed(123)
    clone = build_model(name, **config).eval()
    clone.load_state_dict(model.state_dict())
    x = _input(model, batch=1)
    with torch.no_grad():
        assert torch.equal(_padded_forward(model, x), _padded_forward(clone, x))


@pytest.mark.parametrize("case", CASES)
def test_torchscript_or_export(case):
    model = _model(case).eval()
    x, _ = pad_to_multiple(_input(model, batch=1), model.size_divisor)
    with torch.no_grad():
        expected = model(x)
        try:
            compiled = torch.jit.script(model)
        except Exception:
            compiled = torch.export.export(model, (x,)).module()
        torch.testing.assert_close(compiled(x), expected, rtol=1e-4, atol=1e-5)


def _params(name: str, **kwargs) -> int:
    return sum(p.numel() for p in build_model(name, **kwargs).parameters())


# Parameter counts of the papers' configurations (and the tolerance we accept for "about").
PAPER_PARAMS = {
    # Ronneberger 2015 U-Net, 2D, 64 base channels, 2 classes: about 31.0M; widths 0.5 and 0.25.
    "unet-2d-64": (dict(name="unet", spatial_dims=2, in_channels=1, num_classes=2), 31.03e6, 0.01),
    "unet-2d-32": (dict(name="unet", spatial_dims=2, in_channels=1, num_classes=2, width=0.5), 7.76e6, 0.01),
    "unet-2d-16": (dict(name="unet", spatial_dims=2, in_channels=1, num_classes=2, width=0.25), 1.94e6, 0.01),
    # Zhou 2018 Table 1: UNet++ (32-512 backbone) 9.04M.
    "unetpp-2d": (dict(name="unetpp", spatial_dims=2, in_channels=1, num_classes=1), 9.04e6, 0.03),
    # Oktay 2018: 3D Attention U-Net with 16-256 features 6.40M (plain U-Net 5.88M).
    "attention_unet-3d": (
        dict(name="attention_unet", spatial_dims=3, in_channels=1, num_classes=3, width=0.25), 6.40e6, 0.10),
}


@pytest.mark.parametrize("case", PAPER_PARAMS)
def test_parameter_counts_match_the_papers(case):
    kwargs, expected, tolerance = PAPER_PARAMS[case]
    kwargs = dict(kwargs)
    count = _params(kwargs.pop("name"), **kwargs)
    assert abs(count - expected) / expected <= tolerance, f"{case}: {count:,} parameters, paper {expected:,.0f}"


def test_small_unets_are_small():
    assert _params("unet", spatial_dims=2, width=0.25) < 2e6
    assert _params("unet", spatial_dims=3, width=0.25) < _params("attention_unet", spatial_dims=3, width=0.25)


def test_vnet_has_the_published_convolutions():
    """Milletari 2016 gives no parameter count but the layout: 1, 2, 3, 3, 3 convolutions of 5x5x5 down and
    3, 3, 2, 1 up (21 in all), 2x2x2 stride-2 down-convolutions, PReLU. That layout has 65.2M parameters
    (MONAI's VNet, which follows the older vnet.pytorch port with fewer convolutions, has 45.6M)."""
    model = build_model("vnet", spatial_dims=3, in_channels=1, num_classes=2)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv3d)]
    assert sum(m.kernel_size == (5, 5, 5) for m in convs) == 21
    assert sum(m.kernel_size == (2, 2, 2) and m.stride == (2, 2, 2) for m in convs) == 4
    assert any(isinstance(m, torch.nn.PReLU) for m in model.modules())
    assert abs(sum(p.numel() for p in model.parameters()) - 65.18e6) < 0.01e6


@pytest.mark.parametrize("case", CASES)
def test_linear_head_applied_to_the_features_is_the_forward(case):
    model = _model(case).eval()
    head = model.linear_head()
    assert head is not None and head.kernel_size == (1,) * model.spatial_dims
    x, _ = pad_to_multiple(_input(model, batch=1), model.size_divisor)
    with torch.no_grad():
        torch.testing.assert_close(head(model.forward_features(x)), model(x))
