"""How a model card's fields are checked: the error list that names each bad field by its path, the typed,
bounded readers of text and numbers, and the JSON sanity walk (finite numbers, bounded nesting). Shared by
:mod:`medseg.card`'s parts; a card is untrusted input, so every reader here refuses rather than guesses.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["MAX_NAME_CHARS", "MAX_NESTING", "card_error", "finite_or_null"]

MAX_NAME_CHARS = 256  # names: the card's, the architecture's, a channel's, a label's
MAX_NESTING = 32  # objects and lists inside each other


class _Errors:
    """Collects every problem of a card so that one error lists them all."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, where: str, problem: str) -> None:
        entry = f"{where}: {problem}"
        if not any(item.startswith(f"{where}: ") for item in self.items):  # the first problem of a field is enough
            self.items.append(entry)

    def raise_if_any(self, source: str) -> None:
        if self.items:
            raise ValueError(card_error(source, self.items))


def card_error(source: str, problems: list[str]) -> str:
    lines = "\n  - ".join(problems)
    return f"invalid model card in {source}:\n  - {lines}\nFix these fields of the card (medseg info shows it)."


def _show(value: Any, limit: int = 80) -> str:
    """``repr`` of a card value for an error message: escapes control characters, cut to `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + " ..."


def _typed(errors: _Errors, where: str, value: Any, kind: type | tuple[type, ...], what: str) -> bool:
    if isinstance(value, bool) or not isinstance(value, kind):
        errors.add(where, f"expected {what}, got {_show(value)}")
        return False
    return True


def _text(errors: _Errors, where: str, value: Any, limit: int = MAX_NAME_CHARS, empty: bool = True) -> bool:
    """A string of at most `limit` characters (non-blank unless `empty`)."""
    if not _typed(errors, where, value, str, "a string"):
        return False
    if len(value) > limit or (not empty and not value.strip()):
        errors.add(where, f"expected {'a non-blank' if not empty else 'a'} string of at most {limit} characters, "
                          f"got {len(value)} characters: {_show(value)}")
        return False
    return True


def _number(errors: _Errors, where: str, value: Any, bounds: tuple[float, float], integer: bool = False,
            open_low: bool = False) -> bool:
    """A finite number (an integer if `integer`) in ``[low, high]`` (``(low, high]`` if `open_low`)."""
    low, high = bounds
    kind = int if integer else (int, float)
    ok = isinstance(value, kind) and not isinstance(value, bool) and math.isfinite(value)
    if not (ok and (low < value if open_low else low <= value) and value <= high):
        what = "an integer" if integer else "a finite number"
        errors.add(where, f"expected {what} in {'(' if open_low else '['}{low:g}, {high:g}], got {_show(value)}")
        return False
    return True


def _numbers(errors: _Errors, where: str, value: Any, count: int, bounds: tuple[float, float],
             integer: bool = False, open_low: bool = False) -> bool:
    """A list of `count` numbers, each checked by :func:`_number` (``where[i]`` names a bad one)."""
    if not (isinstance(value, list | tuple) and len(value) == count):
        errors.add(where, f"expected a list of {count} numbers, got {_show(value)}")
        return False
    return all([_number(errors, f"{where}[{i}]", v, bounds, integer, open_low) for i, v in enumerate(value)])


def _check_json(value: Any, errors: _Errors) -> bool:
    """Walk the whole card: no NaN or Infinity (Python's json reads them) in any field, no nesting deeper than
    MAX_NESTING (False then: nothing else should walk it).

    Iterative, so that a hostile card cannot exhaust the stack; every field, including ones this engine does
    not know, is covered.
    """
    stack = [(value, "card", 0)]
    while stack:
        item, where, depth = stack.pop()
        if depth > MAX_NESTING:
            errors.add(where, f"nested more than {MAX_NESTING} levels deep; a model card is a few levels deep")
            return False
        if isinstance(item, float) and not math.isfinite(item):
            errors.add(where.removeprefix("card."), f"expected a finite number, got {item!r}")
        elif isinstance(item, dict):
            stack.extend((v, f"{where}.{k}", depth + 1) for k, v in item.items())
        elif isinstance(item, list | tuple):
            stack.extend((v, f"{where}[{i}]", depth + 1) for i, v in enumerate(item))
    return True


def finite_or_null(value: Any) -> Any:
    """`value` (JSON data) with every NaN or infinite number replaced by None (JSON null): the card refuses
    non-finite numbers, so an undefined metric (a Dice with the label absent everywhere) is written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_null(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_null(v) for v in value]
    return value
