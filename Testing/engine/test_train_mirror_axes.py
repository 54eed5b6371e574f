"""`medseg train --mirror-axes`: mirroring augmentation limited to some axes (none for left/right anatomy), and the
card then limits mirroring test-time augmentation to the same axes."""

import argparse
import itertools

import pytest

from medseg.card import ModelCard
from medseg.catalog import resolve_checkpoint
from medseg.checkpoint import read_card
from medseg.inference import _flip_sets
from medseg.train.cli import add_train_parser, config_from_args
from medseg.train.report import _mirror_inference


def _config(tmp_path, *extra):
    parser = argparse.ArgumentParser()
    add_train_parser(parser.add_subparsers(dest="command"))
    return config_from_args(parser.parse_args(["train", "--data", str(tmp_path), "--out", str(tmp_path / "r"),
                                               *extra]))


def test_default_mirrors_all_axes_and_the_card_keeps_the_engine_default(tmp_path):
    config = _config(tmp_path)
    assert config.augment.flip_axes == (0, 1, 2)
    assert _mirror_inference(config) is None


@pytest.mark.parametrize(("extra", "axes"), [((), ()), (("0",), (0,)), (("2", "0"), (0, 2))])
def test_chosen_axes_reach_augmentation_and_the_card(tmp_path, extra, axes):
    config = _config(tmp_path, "--mirror-axes", *extra)
    assert tuple(sorted(config.augment.flip_axes)) == axes
    inference = _mirror_inference(config)
    assert inference == {"mirror_axes": list(axes)}
    card = read_card(resolve_checkpoint("hippocampus-unet3d")).to_dict()
    card["inference"] = inference
    parsed = ModelCard.from_dict(card)  # a valid card
    assert _flip_sets(3, tta=True, mirror_axes=parsed.inference["mirror_axes"]) == \
        [c for r in range(len(axes) + 1) for c in itertools.combinations([2 + a for a in axes], r)]
    assert _flip_sets(3, tta=True, mirror_axes=[]) == [()]  # no mirroring: TTA is the plain pass


def test_an_axis_out_of_range_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        _config(tmp_path, "--mirror-axes", "3")
    assert "invalid choice" in capsys.readouterr().err
