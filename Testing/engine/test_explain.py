"""Grad-CAM for segmentation, map normalisation and entropy (medseg.explain)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medseg.explain import default_cam_layer, entropy, grad_cam_window, normalize_map
from medseg.models import ARCHITECTURES, build_model

CASES = {
    "unet-2d": ("unet", dict(spatial_dims=2, in_channels=1, num_classes=3, width=0.125, norm="batch")),
    "unet-3d": ("unet", dict(spatial_dims=3, in_channels=2, num_classes=3, width=0.125, norm="instance")),
    "unetpp-2d": ("unetpp", dict(spatial_dims=2, in_channels=2, num_classes=3, width=0.125)),
    "unetpp-3d": ("unetpp", dict(spatial_dims=3, in_channels=1, num_classes=2, width=0.125)),
    "vnet-2d": ("vnet", dict(spatial_dims=2, in_channels=2, num_classes=3, width=0.125, dropout=0.5)),
    "vnet-3d": ("vnet", dict(spatial_dims=3, in_channels=1, num_classes=2, width=0.125)),
    "attention_unet-2d": ("attention_unet", dict(spatial_dims=2, in_channels=1, num_classes=2, width=0.125)),
    "attention_unet-3d": ("attention_unet", dict(spatial_dims=3, in_channels=2, num_classes=3, width=0.125)),
    "plain_conv_unet-3d": ("plain_conv_unet", dict(spatial_dims=3, in_channels=1, num_classes=3, features=[4, 8, 16])),
    "residual_encoder_unet-2d": ("residual_encoder_unet", dict(spatial_dims=2, in_channels=2, num_classes=2,
                                                               features=[4, 8, 16], n_blocks_per_stage=[1, 1, 2])),
}
DEFAULT_LAYERS = {
    "unet": "decoders.3", "unetpp": "nodes.x0_4", "vnet": "up_stages.3", "attention_unet": "decoder.3.conv",
    "plain_conv_unet": "decoder.stages.1", "residual_encoder_unet": "decoder.stages.1",
}
BOTTLENECKS = {"unet": "encoders.4", "unetpp": "nodes.x4_0", "vnet": "down_stages.3", "attention_unet": "encoder.4",
               "plain_conv_unet": "encoder.stages.2", "residual_encoder_unet": "encoder.stages.2"}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny networks gain nothing from threads; one thread is fast on a busy machine and reproducible."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _model(case: str) -> torch.nn.Module:
    torch.manual_seed(0)
    name, kwargs = CASES[case]
    return build_model(name, **kwargs)


def _window(model, size: int = 32) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(1, model.in_channels, *[size] * model.spatial_dims)


def _hook_counts(model) -> dict[str, int]:
    return {name: len(m._forward_hooks) + len(m._forward_pre_hooks) for name, m in model.named_modules()}


def _reference_cam(model, x: torch.Tensor, class_index: int, layer: str) -> torch.Tensor:
    """Textbook Grad-CAM on a copy of the model: full graph, hook that keeps the layer's output."""
    model = copy.deepcopy(model).eval()
    kept: list[torch.Tensor] = []
    model.get_submodule(layer).register_forward_hook(lambda _m, _i, out: kept.append(out))
    logits = model(x)
    region = logits[0].argmax(0) == class_index
    score = (logits[0, class_index] * region).sum()
    (grad,) = torch.autograd.grad(score, kept[0])
    alpha = grad.mean(dim=tuple(range(2, grad.ndim)), keepdim=True)
    cam = F.relu((alpha * kept[0]).sum(1, keepdim=True))
    mode = "bilinear" if x.ndim == 4 else "trilinear"
    return F.interpolate(cam, size=x.shape[2:], mode=mode, align_corners=False)[0, 0].detach()


def test_every_architecture_is_covered():
    assert {name for name, _ in CASES.values()} == set(ARCHITECTURES) == set(DEFAULT_LAYERS)


@pytest.mark.parametrize("case", CASES)
def test_default_layer_is_the_last_full_resolution_decoder_block(case):
    model = _model(case)
    name = default_cam_layer(model)
    assert name == DEFAULT_LAYERS[CASES[case][0]]
    shapes = []
    model.get_submodule(name).register_forward_hook(lambda _m, _i, out: shapes.append(out.shape))
    x = _window(model)
    with torch.no_grad():
        model.eval()(x)
    assert shapes[0][2:] == x.shape[2:]


def test_unetpp_default_layer_follows_the_prune_level():
    model = _model("unetpp-2d")
    model.set_inference(prune_level=2)
    assert default_cam_layer(model) == "nodes.x0_2"
    x = _window(model)
    assert grad_cam_window(model, x, 1).shape == x.shape[2:]
    counts = _hook_counts(model)
    with pytest.raises(ValueError, match="nodes.x0_4"):
        grad_cam_window(model, x, 1, layer="nodes.x0_4")  # beyond the prune level: never runs
    assert _hook_counts(model) == counts
    model.set_inference(prune_level=3, accurate=True)
    assert grad_cam_window(model, x, 1).shape == x.shape[2:]


def test_default_layer_of_an_unknown_network_is_refused():
    with pytest.raises(ValueError, match="layer="):
        default_cam_layer(torch.nn.Conv2d(1, 2, 1))


@pytest.mark.parametrize("case", CASES)
def test_map_shape_and_no_side_effects(case):
    model = _model(case).train()  # train mode: batch-norm statistics and dropout must stay untouched
    model.get_submodule(default_cam_layer(model)).eval()  # mixed flags must come back as they were
    flags = {name: m.training for name, m in model.named_modules()}
    state = copy.deepcopy(model.state_dict())
    counts = _hook_counts(model)
    x = _window(model)
    with torch.no_grad():
        cams = [grad_cam_window(model, x, c) for c in (0, model.num_classes - 1)]
    cams.append(grad_cam_window(model, x, 1, layer=BOTTLENECKS[CASES[case][0]]))
    for cam in cams:
        assert cam.shape == x.shape[2:] and cam.dtype == torch.float32
        assert torch.isfinite(cam).all() and (cam >= 0).all()
    assert sum(bool(cam.any()) for cam in cams) > 0
    assert _hook_counts(model) == counts
    assert {name: m.training for name, m in model.named_modules()} == flags
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize(("case", "layer"), [("unet-3d", "decoders.3"), ("unet-3d", "encoders.4"),
                                             ("attention_unet-2d", "decoder.3.conv"), ("vnet-2d", "down_stages.2")])
def test_map_equals_textbook_grad_cam(case, layer):
    model = _model(case).eval()
    x = _window(model)
    with torch.no_grad():
        predicted = model(x)[0].argmax(0)
    # The class with most voxels, so that the default region (its arg-max voxels) is not empty.
    class_index = int(torch.bincount(predicted.flatten()).argmax())
    expected = _reference_cam(model, x, class_index, layer)
    torch.testing.assert_close(grad_cam_window(model, x, class_index, layer=layer), expected, rtol=1e-4, atol=1e-7)


def test_default_layer_map_is_the_class_logit_without_its_bias():
    """Before the 1x1 head the gradient is the head's weights: the map is ReLU(logit - bias) * |M| / N."""
    model = _model("unet-2d").eval()
    x = _window(model)
    with torch.no_grad():
        logits = model(x)[0]
    for c in range(model.num_classes):
        region = logits.argmax(0) == c
        share = float(region.sum()) / region.numel() if region.any() else 1.0
        expected = F.relu(logits[c] - model.head.bias[c].detach()) * share
        torch.testing.assert_close(grad_cam_window(model, x, c), expected, rtol=1e-4, atol=1e-7)


def test_frozen_parameters_and_inference_mode():
    model = _model("unet-2d").eval().requires_grad_(False)
    with torch.inference_mode():
        x = _window(model)
        cam = grad_cam_window(model, x, 0)
    assert cam.shape == x.shape[2:] and torch.isfinite(cam).all()
    assert not any(p.requires_grad for p in model.parameters())


def test_region_and_the_all_voxels_fallback():
    model = _model("unet-2d").eval()
    with torch.no_grad():
        model.head.bias[2] = -1e4  # class 2 is predicted nowhere
    x = _window(model)
    everywhere = torch.ones(x.shape[2:], dtype=torch.bool)
    torch.testing.assert_close(grad_cam_window(model, x, 2), grad_cam_window(model, x, 2, region=everywhere))
    corner = torch.zeros(x.shape[2:], dtype=torch.bool)
    corner[:8, :8] = True
    assert not torch.equal(grad_cam_window(model, x, 2, region=corner), grad_cam_window(model, x, 2))
    with pytest.raises(ValueError, match="region is empty"):
        grad_cam_window(model, x, 2, region=torch.zeros_like(corner))
    with pytest.raises(ValueError, match="shape"):
        grad_cam_window(model, x, 2, region=corner[:16])


def test_bad_arguments_are_refused_by_name():
    model = _model("unet-2d").eval()
    x = _window(model)
    counts = _hook_counts(model)
    with pytest.raises(ValueError, match="valid names: .*decoders.3"):
        grad_cam_window(model, x, 1, layer="decoder.3")
    with pytest.raises(ValueError, match="ran 4 times"):
        grad_cam_window(model, x, 1, layer="pool")  # one max-pool module shared by all levels
    with pytest.raises(ValueError, match="pad_to_multiple"):
        grad_cam_window(model, x[..., :30], 1)
    with pytest.raises(ValueError, match="one window"):
        grad_cam_window(model, x.expand(2, -1, -1, -1), 1)
    with pytest.raises(ValueError, match="class_index"):
        grad_cam_window(model, x, 3)
    assert _hook_counts(model) == counts


def test_normalize_map():
    cam = np.array([[0.0, 2.0], [1.0, 4.0]], dtype=np.float32)
    np.testing.assert_allclose(normalize_map(cam), cam / 4)
    assert normalize_map(np.arange(3)).dtype == np.float64
    assert not normalize_map(np.zeros((2, 2))).any()
    tensor = normalize_map(torch.tensor([[0.0, 0.5], [1.0, 2.0]]))
    assert isinstance(tensor, torch.Tensor) and float(tensor.max()) == 1.0 and float(tensor.min()) == 0.0
    assert not normalize_map(torch.zeros(3, 3, 3)).any()


def test_entropy():
    uniform = torch.full((4, 3, 5, 6), 0.25)
    torch.testing.assert_close(entropy(uniform), torch.ones(3, 5, 6))
    one_hot = F.one_hot(torch.randint(0, 3, (5, 6)), 3).permute(2, 0, 1).double()
    assert torch.equal(entropy(one_hot), torch.zeros(5, 6, dtype=torch.float64))  # dtype kept
    half = entropy(torch.tensor([[0.5, 1.0, 0.0]]))  # one channel: sigmoid probabilities
    torch.testing.assert_close(half, torch.tensor([1.0, 0.0, 0.0]))
    mixed = entropy(torch.tensor([[0.9], [0.1]]))
    assert 0 < float(mixed) < 1
    with pytest.raises(ValueError):
        entropy(torch.ones(3))


# --- Adebayo et al. 2018 model-randomisation sanity check -------------------------------------------------

SIZE = 32


def _blobs(count: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy images `(N, 1, 32, 32)` with one bright disk each, and the disk as class 1 `(N, 32, 32)`."""
    yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    images, labels = [], []
    for _ in range(count):
        cy, cx = torch.randint(6, SIZE - 6, (2,), generator=gen)
        radius = 3 + 2 * torch.rand((), generator=gen)
        disk = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
        images.append(0.3 * torch.randn(SIZE, SIZE, generator=gen) + disk)
        labels.append(disk.long())
    return torch.stack(images)[:, None], torch.stack(labels)


def _trained_unet() -> torch.nn.Module:
    torch.manual_seed(7)
    gen = torch.Generator().manual_seed(7)
    images, labels = _blobs(64, gen)
    model = build_model("unet", spatial_dims=2, in_channels=1, num_classes=2, width=0.25, depth=3)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(40):
        batch = torch.randint(0, 64, (16,), generator=gen)
        loss = F.cross_entropy(model(images[batch]), labels[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def _spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Rank correlation (ties get their mean rank); 0 when a map is constant (it ranks nothing)."""

    def ranks(values: torch.Tensor) -> np.ndarray:
        _, inverse, counts = np.unique(values.flatten().numpy(), return_inverse=True, return_counts=True)
        first = np.concatenate([[0], np.cumsum(counts)[:-1]])
        return (first + (counts - 1) / 2)[inverse]

    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


def _inside_fraction(cam: torch.Tensor, mask: torch.Tensor) -> float:
    total = float(cam.sum())
    return float(cam[mask].sum()) / total if total > 0 else 0.0


def test_model_randomisation_changes_the_map():
    """Grad-CAM of a trained network sits on the blob; after re-initialising every weight it does not."""
    model = _trained_unet()
    images, labels = _blobs(3, torch.Generator().manual_seed(100))
    masks = labels.bool()
    trained = [grad_cam_window(model, images[i : i + 1], 1) for i in range(3)]
    for cam, mask in zip(trained, masks, strict=True):
        assert float(cam[mask].mean()) > 10 * float(cam[~mask].mean())  # per voxel, inside vs outside
        assert _inside_fraction(cam, mask) > 0.9
    randomised = copy.deepcopy(model)
    for seed in range(3):
        torch.manual_seed(10 + seed)
        for module in randomised.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
        for i, (cam, mask) in enumerate(zip(trained, masks, strict=True)):
            changed = grad_cam_window(randomised, images[i : i + 1], 1)
            assert _spearman(cam, changed) < 0.5
            assert _inside_fraction(changed, mask) < 0.5
