"""UNet++ specifics: pruning really computes less, heads agree, accurate mode averages the heads."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from medseg.models import build_model


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return build_model("unetpp", spatial_dims=2, in_channels=1, num_classes=3, width=0.25).eval()


def _flops(model, x) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops()


def test_pruned_levels_cost_fewer_flops(net):
    x = torch.randn(1, 1, 64, 64)
    flops = []
    for level in (1, 2, 3, 4):
        net.set_inference(prune_level=level)
        flops.append(_flops(net, x))
    net.set_inference()
    assert flops == sorted(flops) and len(set(flops)) == 4, flops
    # L1 computes 3 of the 15 nodes, all at the two finest levels: far less than a third of L4.
    assert flops[0] < flops[3] / 3


def test_fast_mode_equals_its_head(net):
    x = torch.randn(1, 1, 32, 48)
    with torch.no_grad():
        heads = net.forward_heads(x)
        assert len(heads) == 4
        for level in (1, 2, 3, 4):
            net.set_inference(prune_level=level)
            torch.testing.assert_close(net(x), heads[level - 1])
    net.set_inference()


def test_accurate_mode_averages_head_probabilities(net):
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        mean = torch.stack([h.softmax(1) for h in net.forward_heads(x)]).mean(0)
        net.set_inference(prune_level=4, accurate=True)
        got = net(x).softmax(1)
    net.set_inference()
    torch.testing.assert_close(got, mean, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kwargs", [dict(prune_level=0), dict(prune_level=5), dict(prune_level=2.0),
                                    dict(accurate="yes")])
def test_bad_inference_options_are_refused(net, kwargs):
    with pytest.raises(ValueError, match="prune_level|accurate"):
        net.set_inference(**kwargs)
