"""Self-describing checkpoints that cannot run code.

A MedSeg checkpoint is one safetensors file: the weights as plain tensors and the model card as JSON in
the file's metadata (key ``medseg.card``). Reading it never unpickles anything. A plain PyTorch state dict
(``.pt``/``.pth``) is accepted only through :func:`import_state_dict`, with ``torch.load(weights_only=True)``
and an architecture named explicitly by a card.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import pickle
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .card import ModelCard
from .models import ARCHITECTURES, SegmentationNetwork, build_model
from .models.ensemble import Ensemble

__all__ = ["LoadedModel", "import_state_dict", "load_checkpoint", "parameter_count", "read_card", "save_checkpoint"]

log = logging.getLogger(__name__)
CARD_KEY = "medseg.card"
MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit on its JSON header
MAX_PARAMETER_BYTES = 2 * 1024**3  # a card may ask for at most 2 GiB of weights (512 million float32 parameters)
# Stored dtypes accepted for the network's floating-point tensors (loaded into its float32 parameters); integer
# tensors (batch norm's num_batches_tracked) must be stored in their own type.
FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")
_TORCH_DTYPES = {torch.float16: "F16", torch.bfloat16: "BF16", torch.float32: "F32", torch.float64: "F64",
                 torch.int64: "I64", torch.int32: "I32", torch.uint8: "U8", torch.bool: "BOOL"}
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


def _safetensors_header(path: Path) -> dict[str, Any] | None:
    """The JSON header of a safetensors file, or None if `path` does not start like one.

    The format: an 8-byte little-endian length N, then N bytes of JSON (an object). N must fit in the file and
    in MAX_HEADER_BYTES. The length's first byte can be anything, 0x80 included (a pickle's first byte), so this
    test comes before any pickle sniffing.
    """
    with path.open("rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            return None
        length = int.from_bytes(prefix, "little")
        if not 2 <= length <= min(MAX_HEADER_BYTES, path.stat().st_size - 8):
            return None
        text = f.read(length)
    if not text.startswith(b"{"):
        return None
    try:
        header = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return header if isinstance(header, dict) else None


def _sniff(path: Path) -> str:
    """'safetensors' (by its header, checked first), 'pickle' (zip or raw pickle), or 'unknown'."""
    if _safetensors_header(path) is not None:
        return "safetensors"
    with path.open("rb") as f:
        head = f.read(4)
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":
        return "pickle"
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


def _check_arguments(card: ModelCard, source: str) -> type[SegmentationNetwork]:
    """The card's architecture class, once every argument of the card is one its constructor takes."""
    cls = ARCHITECTURES.get(card.architecture)
    if cls is None:
        raise ValueError(f"{source}: architecture: unknown architecture {card.architecture!r}; valid names: "
                         f"{', '.join(ARCHITECTURES)} (medseg models lists them)")
    params = inspect.signature(cls).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        for key in card.architecture_args:
            if key not in params:
                raise ValueError(f"{source}: architecture_args.{key}: {card.architecture} takes no argument "
                                 f"{key!r}; its arguments are {', '.join(params)}. Remove it from the card.")
    return cls


def _build_meta(card: ModelCard, source: str) -> SegmentationNetwork:
    """The card's network on torch's meta device (shapes only, nothing allocated), refused above
    MAX_PARAMETER_BYTES; a constructor's TypeError/ValueError becomes a ValueError naming the card."""
    cls = _check_arguments(card, source)
    try:
        with torch.device("meta"):
            model = _members(card, lambda: cls(**card.architecture_args))
    except (TypeError, ValueError, RuntimeError, OverflowError) as exc:
        msg = str(exc.args[0] if exc.args else exc)[:300]
        raise ValueError(f"{source}: architecture_args cannot build {card.architecture}: {msg}. "
                         f"Fix architecture_args in the card.") from None
    size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    if size > MAX_PARAMETER_BYTES:
        count = sum(t.numel() for t in model.state_dict().values())
        raise ValueError(f"{source}: architecture_args {card.architecture_args} ask for {count:,} parameters "
                         f"({size / 2**30:.1f} GiB); at most {MAX_PARAMETER_BYTES / 2**30:g} GiB are allowed. "
                         f"Check width, depth and features in the card.")
    return model


def _members(card: ModelCard, build) -> SegmentationNetwork:
    """The network `build` makes, or an :class:`Ensemble` of one per weight set the card's ``ensemble`` names."""
    if not card.ensemble:
        return build()
    return Ensemble([build() for _ in card.ensemble])


def parameter_count(card: ModelCard, source: str = "model card") -> int:
    """The number of parameters of the card's network, counted on the meta device (nothing allocated).

    Raises:
        ValueError: an unknown architecture or argument, arguments the constructor refuses, or a network above
            MAX_PARAMETER_BYTES.
    """
    return sum(t.numel() for t in _build_meta(card, source).parameters())


def _build(card: ModelCard, source: str) -> SegmentationNetwork:
    _build_meta(card, source)  # refuses bad arguments and oversized networks before anything is allocated
    return _construct(card, source)


def _construct(card: ModelCard, source: str) -> SegmentationNetwork:
    try:
        return _members(card, lambda: build_model(card.architecture, **card.architecture_args))
    except (KeyError, TypeError, ValueError) as exc:
        msg = exc.args[0] if exc.args else exc
        raise ValueError(f"{source}: the card's architecture cannot be built: {msg}") from None


def _mismatch(own: dict[str, tuple[tuple[int, ...], str]], given: dict[str, tuple[tuple[int, ...], str]]) -> list[str]:
    """Problems between the network's tensors and a file's, each ``(shape, dtype)``: missing, unexpected, shape
    and dtype mismatches (a floating tensor must be stored in FLOAT_DTYPES, any other in its own dtype)."""
    missing = sorted(set(own) - set(given))
    unexpected = sorted(set(given) - set(own))
    common = sorted(set(own) & set(given))
    shapes = [f"{k}: file {given[k][0]} vs card {own[k][0]}" for k in common if own[k][0] != given[k][0]]
    dtypes = [f"{k}: {given[k][1]}" for k in common
              if given[k][1] not in (FLOAT_DTYPES if own[k][1] in FLOAT_DTYPES else (own[k][1],))]
    return [f"{name} {items[:5]}{' ...' if len(items) > 5 else ''}" for name, items in
            (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes),
             ("dtype not accepted", dtypes)) if items]


def _refuse(model: SegmentationNetwork, problems: list[str], source: str) -> None:
    if problems:
        raise ValueError(f"{source}: the weights do not match the card's architecture "
                         f"({model.__class__.__name__} {model.config}): {'; '.join(problems)}. "
                         f"Fix architecture_args in the card or use the checkpoint these weights came from.")


def _tensor_specs(state: dict[str, torch.Tensor]) -> dict[str, tuple[tuple[int, ...], str]]:
    return {k: (tuple(v.shape), _TORCH_DTYPES.get(v.dtype, str(v.dtype))) for k, v in state.items()}


def _header_specs(header: dict[str, Any], source: str) -> dict[str, tuple[tuple[int, ...], str]]:
    """``{name: (shape, dtype)}`` of a safetensors header, read without loading a tensor."""
    specs = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        shape = entry.get("shape") if isinstance(entry, dict) else None
        if not (isinstance(shape, list) and all(isinstance(n, int) and n >= 0 for n in shape)):
            raise ValueError(f"{source}: tensor {name!r} of the safetensors header has no valid shape; the file is "
                             f"damaged. Re-export it with medseg import or re-train it.")
        specs[name] = (tuple(shape), str(entry.get("dtype")))
    return specs


def _load_weights(model: SegmentationNetwork, state: dict[str, torch.Tensor], source: str) -> None:
    _refuse(model, _mismatch(_tensor_specs(model.state_dict()), _tensor_specs(state)), source)
    model.load_state_dict(state, strict=True)


def load_checkpoint(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> LoadedModel:
    """Load a checkpoint: validate its card, check the weights' names, shapes and dtypes in the file's header
    against the network the card describes (built on the meta device), then build it, load the weights, move
    to `device`, eval. Nothing large is allocated before the card and the header agree."""
    card = read_card(path)
    source = str(path)
    meta = _build_meta(card, source)
    header = _safetensors_header(Path(path)) or {}
    _refuse(meta, _mismatch(_tensor_specs(meta.state_dict()), _header_specs(header, source)), source)
    model = _construct(card, source)
    _load_weights(model, load_file(str(path), device="cpu"), source)
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
    log.info("saved %s (%r, %d tensors)", out, card.architecture, len(tensors))
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
