"""Self-describing checkpoints that cannot run code.

A MedSeg checkpoint is one safetensors file: the weights as plain tensors and the model card as JSON in
the file's metadata (key ``medseg.card``). Reading it never unpickles anything. A plain PyTorch state dict
(``.pt``/``.pth``) is accepted only through :func:`import_state_dict`, with ``torch.load(weights_only=True)``
and an architecture named explicitly by a card.
"""

from __future__ import annotations

import logging
import os
import pickle
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .card import ModelCard
from .models import SegmentationNetwork, build_model

__all__ = ["LoadedModel", "import_state_dict", "load_checkpoint", "read_card", "save_checkpoint"]

log = logging.getLogger(__name__)
CARD_KEY = "medseg.card"
_PICKLE_HINT = (
    "MedSeg never unpickles checkpoints because a pickle can run arbitrary code. If this is a plain PyTorch "
    "state dict, convert it once with: medseg import {path} --card CARD.json --output MODEL.safetensors"
)


@dataclass(frozen=True)
class LoadedModel:
    """A network in eval mode with its card."""

    model: SegmentationNetwork
    card: ModelCard
    path: Path


def _sniff(path: Path) -> str:
    """'safetensors', 'pickle' (zip or raw pickle), or 'unknown' from the first bytes."""
    with path.open("rb") as f:
        head = f.read(16)
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":
        return "pickle"
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    return "unknown"


def _existing(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint {str(p)!r} does not exist; give the path of a .safetensors file "
                                f"or a bundled model name (medseg models lists them)")
    return p


def read_card(path: str | os.PathLike[str]) -> ModelCard:
    """Read and validate the card of a checkpoint without loading its weights."""
    p = _existing(path)
    kind = _sniff(p)
    if kind == "pickle":
        raise ValueError(f"{p} is a PyTorch pickle file, not a MedSeg checkpoint. " + _PICKLE_HINT.format(path=p))
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ValueError(f"{p} is not a readable safetensors checkpoint ({exc}); is the file truncated or of "
                         f"another format? Re-export it with medseg import or re-train it.") from None
    if CARD_KEY not in meta:
        raise ValueError(f"{p} is a safetensors file without a MedSeg model card (metadata key {CARD_KEY!r}); "
                         f"import its weights with: medseg import {p} --card CARD.json --output OUT.safetensors")
    return ModelCard.from_json(meta[CARD_KEY], source=str(p))


def _build(card: ModelCard, source: str) -> SegmentationNetwork:
    try:
        return build_model(card.architecture, **card.architecture_args)
    except (KeyError, TypeError, ValueError) as exc:
        msg = exc.args[0] if exc.args else exc
        raise ValueError(f"{source}: the card's architecture cannot be built: {msg}") from None


def _load_weights(model: SegmentationNetwork, state: dict[str, torch.Tensor], source: str) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: file {tuple(state[k].shape)} vs card {tuple(own[k].shape)}"
              for k in sorted(set(own) & set(state)) if own[k].shape != state[k].shape]
    if missing or unexpected or shapes:
        parts = [f"{name} {items[:5]}{' ...' if len(items) > 5 else ''}" for name, items in
                 (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)) if items]
        raise ValueError(f"{source}: the weights do not match the card's architecture "
                         f"({model.__class__.__name__} {model.config}): {'; '.join(parts)}. "
                         f"Fix architecture_args in the card or use the checkpoint these weights came from.")
    model.load_state_dict(state, strict=True)


def load_checkpoint(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> LoadedModel:
    """Load a checkpoint: validate its card, build its network, load its weights, move to `device`, eval."""
    card = read_card(path)
    model = _build(card, str(path))
    _load_weights(model, load_file(str(path), device="cpu"), str(path))
    return LoadedModel(model.to(device).eval(), card, Path(path))


def save_checkpoint(path: str | os.PathLike[str], model: SegmentationNetwork, card: ModelCard,
                    dtype: torch.dtype | None = None) -> Path:
    """Write `model`'s weights and `card` atomically (a temporary file renamed in place: never half-written).

    `dtype` (e.g. ``torch.float16``) stores the floating-point tensors in that type, halving a bundled file;
    loading casts them back to the network's float32 parameters.
    """
    if card.architecture_args != model.config:
        raise ValueError(f"card {card.name!r} describes {card.architecture}({card.architecture_args}) but the model "
                         f"is {model.__class__.__name__}({model.config}); build the card from model.config")
    ModelCard.from_dict(card.to_dict(), source=f"card {card.name!r}")  # validates before writing anything
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu", dtype=dtype if dtype and v.is_floating_point() else v.dtype).contiguous()
               for k, v in model.state_dict().items()}
    fd, tmp = tempfile.mkstemp(prefix=out.name, suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={CARD_KEY: card.to_json(), "format": "pt"})
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    log.info("saved %s (%s, %d tensors)", out, card.architecture, len(tensors))
    return out


def _plain_state_dict(obj: object, source: str) -> dict[str, torch.Tensor]:
    for key in ("state_dict", "model", "model_state_dict", "network_weights"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{source} does not hold a plain state dict (a mapping of names to tensors); "
                         f"save one with torch.save(model.state_dict(), path)")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def import_state_dict(src: str | os.PathLike[str], card: ModelCard, dst: str | os.PathLike[str]) -> Path:
    """Convert a plain PyTorch state dict into a MedSeg checkpoint, the architecture given by `card`.

    Loads with ``torch.load(weights_only=True)``: a file that needs code to unpickle is refused, its code
    never runs.
    """
    p = _existing(src)
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"refused to load {p}: it is not a plain tensor state dict loadable with weights_only=True "
                         f"({first}). Its code was not run. Re-save it as torch.save(model.state_dict(), path) "
                         f"in a trusted environment.") from None
    model = _build(card, str(p))
    _load_weights(model, _plain_state_dict(obj, str(p)), str(p))
    return save_checkpoint(dst, model, card)
