"""The model card's calibration as the panel shows it (MedSegLib.panel.format_calibration), without Qt."""

from __future__ import annotations

from medseg.catalog import bundled_models
from MedSegLib.panel import describe_card, format_calibration


def test_bundled_card_text_states_temperature_and_the_90_percent_interval():
    card = {entry.name: entry for entry in bundled_models()}["hippocampus-unet3d"].card
    text = describe_card(card)
    line = text.splitlines()[-1]
    assert line.startswith("Calibration: temperature ") and "90 % interval" in line
    assert f"ECE {card.calibration['ece_before']:.3f} -> {card.calibration['ece_after']:.3f}" in line


def test_an_uncalibrated_card_says_its_volumes_have_a_range_not_an_interval():
    assert "TTA range, not an interval" in format_calibration(None)
    assert format_calibration({"temperature": 2.0}) == "Calibration: temperature 2"
