"""Resumable training state in safe formats: tensors in safetensors, scalars in JSON, never pickle.

``last_state.safetensors`` holds the optimizer's tensors (``optimizer.state.<param>.<key>``) and the random
generators' states; ``last_state.json`` holds the epoch, the history, the best score, the optimizer's
param groups and its non-tensor state. The weights themselves are in ``last.safetensors`` (a checkpoint).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

__all__ = ["TrainState", "load_state", "save_state"]

STATE_TENSORS = "last_state.safetensors"
STATE_JSON = "last_state.json"


@dataclass
class TrainState:
    """Where a run is: epochs completed, elapsed seconds, per-epoch history rows, best validation score.

    ``sessions`` lists each start or resume (``start_epoch``, ``epochs_planned``): a resume with more epochs
    restarts the schedule from a higher rate, and the card says so.
    """

    epoch: int = 0
    elapsed_s: float = 0.0
    best_dice: float = -1.0
    best_epoch: int = 0
    best_metrics: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    sessions: list[dict[str, int]] = field(default_factory=list)


def _atomic(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _split_optimizer(opt_state: dict) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, entry in opt_state["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.state.{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": opt_state["param_groups"], "scalars": scalars}


def save_state(run: Path, state: TrainState, optimizer: torch.optim.Optimizer,
               generators: dict[str, torch.Generator]) -> None:
    """Write the state files of `run` atomically (tensors first, then the JSON that names the epoch)."""
    tensors, opt_json = _split_optimizer(optimizer.state_dict())
    tensors.update({f"rng.{name}": g.get_state() for name, g in generators.items()})
    tensors["rng.torch"] = torch.get_rng_state()
    meta = {"epoch": str(state.epoch)}
    _atomic(run / STATE_TENSORS, lambda tmp: save_file(tensors, tmp, metadata=meta))
    data = {"epoch": state.epoch, "elapsed_s": state.elapsed_s, "best_dice": state.best_dice,
            "best_epoch": state.best_epoch, "best_metrics": state.best_metrics, "history": state.history,
            "sessions": state.sessions, "optimizer": opt_json}
    text = json.dumps(data, indent=1)
    _atomic(run / STATE_JSON, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def load_state(run: Path, optimizer: torch.optim.Optimizer, generators: dict[str, torch.Generator]) -> TrainState:
    """Restore the optimizer and generators from `run` and return the saved :class:`TrainState`.

    Raises:
        FileNotFoundError: no saved state in `run` (nothing to resume).
        ValueError: the two state files disagree (a run interrupted while saving).
    """
    json_path, tensor_path = run / STATE_JSON, run / STATE_TENSORS
    if not json_path.is_file() or not tensor_path.is_file():
        raise FileNotFoundError(f"{run} has no {STATE_JSON}/{STATE_TENSORS} to resume from; train without --resume")
    data = json.loads(json_path.read_text(encoding="utf-8"))
    with safe_open(str(tensor_path), framework="pt") as f:
        saved_epoch = (f.metadata() or {}).get("epoch")
    if saved_epoch != str(data["epoch"]):
        raise ValueError(f"{tensor_path} is from epoch {saved_epoch} but {json_path} from epoch {data['epoch']} "
                         f"(interrupted while saving); resume from best.safetensors in a new run or start again")
    tensors = load_file(str(tensor_path))
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer.state."):
            idx, name = key.removeprefix("optimizer.state.").split(".", 1)
            state.setdefault(int(idx), {})[name] = value
    for idx, entries in data["optimizer"]["scalars"].items():
        state.setdefault(int(idx), {}).update(entries)
    optimizer.load_state_dict({"state": state, "param_groups": data["optimizer"]["param_groups"]})
    for name, g in generators.items():
        g.set_state(tensors[f"rng.{name}"])
    torch.set_rng_state(tensors["rng.torch"])
    return TrainState(data["epoch"], data["elapsed_s"], data["best_dice"], data["best_epoch"],
                      data.get("best_metrics", {}), data["history"], data.get("sessions", []))
