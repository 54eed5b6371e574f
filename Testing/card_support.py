"""The small hippocampus-like model card the engine and bridge tests build their tiny networks with."""

from __future__ import annotations


def card_dict(model, channels=("T1w",)) -> dict:
    """A complete card for `model` (a small hippocampus-like U-Net) as plain JSON data, one MR input per channel."""
    return {
        "name": "tiny-hippocampus",
        "summary": "A tiny test network",
        "architecture": "unet",
        "architecture_args": model.config,
        "inputs": [{"name": c, "modality": "MR", "normalization": {"kind": "zscore", "percentiles": [0.5, 99.5]}}
                   for c in channels],
        "labels": [
            {"id": 0, "name": "background", "color": [0, 0, 0]},
            {"id": 1, "name": "anterior hippocampus", "color": [220, 180, 60],
             "terminology": {"category": {"scheme": "SCT", "code": "123037004", "meaning": "Anatomical Structure"},
                             "type": {"scheme": "SCT", "code": "5366008", "meaning": "Hippocampus"}}},
            {"id": 2, "name": "posterior hippocampus", "color": [60, 140, 220]},
        ],
        "spacing": [1.0, 1.0, 1.0],
        "patch_size": [32, 48, 32],
        "training": {"dataset": "MSD Task04 Hippocampus", "license": "CC-BY-SA 4.0"},
        "metrics": {"dice": {"anterior hippocampus": 0.5}},
    }
