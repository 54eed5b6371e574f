"""`medseg train --ct-window`: a fixed HU clipping window for the 'ct' normalisation (BTCV's [-125, 275])."""

import argparse

import numpy as np
import pytest

from medseg.preprocess import normalize_channel
from medseg.train.cli import add_train_parser, config_from_args
from medseg.train.config import TrainConfig
from medseg.train.data import fit_normalization


def _ct_case(seed: int = 0):
    rng = np.random.default_rng(seed)
    image = rng.normal(40.0, 300.0, (8, 16, 16)).astype(np.float32)  # spans far beyond the window
    label = np.zeros(image.shape, np.uint8)
    label[2:6, 4:12, 4:12] = 1
    return image, label


def test_fixed_window_is_kept_and_statistics_come_from_the_clipped_foreground():
    image, label = _ct_case()
    norm = fit_normalization("ct", [image], [label], (0.5, 99.5), window=(-125.0, 275.0))
    assert norm.window == (-125.0, 275.0)
    fg = np.clip(image[label > 0][::10], -125.0, 275.0)
    assert norm.mean == pytest.approx(float(fg.mean()), rel=1e-5)
    out = normalize_channel(np.array([[[-1000.0, 3000.0]]], np.float32), norm)
    assert out[0, 0, 0] == pytest.approx((-125.0 - norm.mean) / norm.std, rel=1e-5)
    assert out[0, 0, 1] == pytest.approx((275.0 - norm.mean) / norm.std, rel=1e-5)


def test_without_window_the_percentiles_decide():
    image, label = _ct_case()
    norm = fit_normalization("ct", [image], [label], (0.5, 99.5))
    assert norm.window != (-125.0, 275.0)
    assert norm.window[0] < -125.0 and norm.window[1] > 275.0


def test_cli_passes_the_window_and_config_refuses_a_reversed_one(tmp_path):
    parser = argparse.ArgumentParser()
    add_train_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train", "--data", str(tmp_path), "--out", str(tmp_path / "run"),
                                      "--ct-window", "-125", "275"])
    assert config_from_args(args).ct_window == (-125.0, 275.0)
    with pytest.raises(ValueError, match="ct_window"):
        TrainConfig(data=tmp_path, out=tmp_path / "run", ct_window=(275.0, -125.0))
