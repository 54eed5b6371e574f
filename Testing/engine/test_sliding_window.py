"""Sliding-window stitching: exact against a whole-volume pass, MONAI's inferer, batching, fp16, cancel."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medseg.device import FallbackRunner
from medseg.models import build_model
from medseg.models.padding import crop_to, pad_to_multiple
from medseg.sliding_window import (
    Cancelled,
    CancelToken,
    WindowOptions,
    gaussian_importance,
    sliding_window,
    window_starts,
)

SHAPE = (37, 50, 29)  # odd sizes, none a multiple of the window


def _pointwise():
    torch.manual_seed(0)
    return torch.nn.Conv3d(1, 3, 1)


def _predict(net):
    """Logits with one pass: (B, 1, K, *window)."""

    def predict(x):
        with torch.no_grad():
            return net(x)[:, None]

    return predict


@pytest.mark.parametrize("window", [(16, 16, 16), (37, 16, 29), (1, 32, 32), (40, 60, 30)])
@pytest.mark.parametrize("batch", [1, 5])
def test_stitching_equals_a_whole_volume_pass(window, batch):
    """A network without spatial context gives the same probabilities through windows as on the whole volume."""
    net = _pointwise()
    vol = torch.randn(1, *SHAPE)
    full = _predict(net)(vol[None])[0, 0].softmax(0).numpy()
    out = sliding_window(vol, _predict(net), 3, WindowOptions(window, 0.5, batch_size=batch, keep=(0, 1, 2)))
    probs = np.stack([out.probabilities[k] for k in range(3)])
    np.testing.assert_allclose(probs, full, atol=1e-6)
    np.testing.assert_array_equal(out.labels, full.argmax(0))


def test_one_window_equals_the_padded_network_on_a_unet():
    torch.manual_seed(0)
    net = build_model("unet", spatial_dims=3, in_channels=1, num_classes=3, width=0.125, depth=3).eval()
    vol = torch.randn(1, 29, 30, 31)
    padded, shape = pad_to_multiple(vol[None], 4, min_size=32)
    with torch.no_grad():
        whole = crop_to(net(padded).softmax(1), shape)[0].numpy()
    out = sliding_window(vol, _predict(net), 3, WindowOptions((32, 32, 32), keep=(0, 1, 2)))
    np.testing.assert_allclose(np.stack([out.probabilities[k] for k in range(3)]), whole, atol=1e-6)


@pytest.mark.parametrize("overlap", [0.25, 0.5])
def test_same_probabilities_as_monai(overlap):
    monai = pytest.importorskip("monai.inferers", reason="MONAI is a test-only dependency (pip install monai)")
    torch.manual_seed(0)
    net = build_model("unet", spatial_dims=3, in_channels=1, num_classes=3, width=0.125, depth=3).eval()
    vol = torch.randn(1, 1, 45, 38, 52)
    roi = (16, 24, 32)
    with torch.no_grad():
        ref = monai.sliding_window_inference(vol, roi, 1, net, overlap=overlap, mode="gaussian",
                                             roi_weight_map=gaussian_importance(roi, 0.125)).softmax(1)
    out = sliding_window(vol[0], _predict(net), 3, WindowOptions(roi, overlap, keep=(0, 1, 2)))
    ours = np.stack([out.probabilities[k] for k in range(3)])
    np.testing.assert_allclose(ours, ref[0].numpy(), atol=1e-4)


def test_blending_features_then_the_linear_head_equals_blending_logits():
    """Inference blends a network's few features and applies its 1x1 head once per voxel: same result."""
    torch.manual_seed(0)
    net = build_model("unet", spatial_dims=3, in_channels=1, num_classes=7, width=0.0625, depth=3).eval()
    vol = torch.randn(1, 29, 33, 35)
    options = WindowOptions((16, 16, 16), 0.5, keep=tuple(range(7)), entropy=True)
    logits = sliding_window(vol, _predict(net), 7, options)
    head = net.linear_head()
    weight = head.weight.detach().reshape(7, -1)

    def apply(features):  # (P, N, F) -> (P, N, K)
        return features @ weight.t() + head.bias.detach()

    def features(x):
        with torch.no_grad():
            return net.forward_features(x)[:, None]

    feats = sliding_window(vol, features, head.in_channels, options, head=apply, classes=7)
    np.testing.assert_array_equal(feats.labels, logits.labels)
    for k in range(7):
        np.testing.assert_allclose(feats.probabilities[k], logits.probabilities[k], atol=1e-5)
    np.testing.assert_allclose(feats.entropy, logits.entropy, atol=1e-5)


def test_float16_accumulation_keeps_the_labels():
    net = _pointwise()
    vol = torch.randn(1, *SHAPE)
    fp32 = sliding_window(vol, _predict(net), 3, WindowOptions((16, 16, 16), keep=(1,)))
    fp16 = sliding_window(vol, _predict(net), 3, WindowOptions((16, 16, 16), keep=(1,),
                                                               accumulate_dtype=torch.float16))
    assert np.abs(fp16.probabilities[1] - fp32.probabilities[1]).max() < 5e-3
    assert (fp16.labels == fp32.labels).mean() > 0.999


def test_window_starts_cover_the_axis():
    for size, window, overlap in [(100, 32, 0.5), (33, 32, 0.25), (32, 32, 0.5), (10, 32, 0.5), (300, 96, 0.0)]:
        starts = window_starts(size, window, overlap)
        covered = np.zeros(max(size, window), bool)
        for s in starts:
            covered[s: s + window] = True
        assert covered[:size].all() and starts == sorted(starts) and starts[-1] + window >= size


def test_cancel_stops_between_windows():
    token = CancelToken()
    calls = []

    def predict(x):
        calls.append(1)
        token.cancel()
        return torch.zeros(x.shape[0], 1, 2, *x.shape[2:])

    with pytest.raises(Cancelled, match="cancelled"):
        sliding_window(torch.zeros(1, 40, 40, 40), predict, 2, WindowOptions((16, 16, 16)), cancel=token)
    assert len(calls) == 1


def test_out_of_memory_halves_the_batch():
    seen = []

    def fn(x, device):
        seen.append(x.shape[0])
        if x.shape[0] > 1:
            raise torch.OutOfMemoryError("simulated")
        return x * 2

    runner = FallbackRunner(fn, torch.device("cpu"), batch_size=4)
    x = torch.arange(6.0).reshape(6, 1)
    torch.testing.assert_close(runner(x), x * 2)
    assert runner.batch_size == 1 and seen[0] == 4


def test_out_of_memory_at_one_window_on_cpu_is_a_clear_error():
    def fn(x, device):
        raise torch.OutOfMemoryError("simulated")

    with pytest.raises(MemoryError, match="region of interest"):
        FallbackRunner(fn, torch.device("cpu"), batch_size=1)(torch.zeros(1, 1))
