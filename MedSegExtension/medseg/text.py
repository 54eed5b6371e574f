"""Text from a model card made safe to print or show.

A checkpoint comes from anyone, and its card's strings (names, summary, label names, data set) reach a
terminal, a log and the Slicer panel. :func:`printable` removes what could act instead of being read:
ANSI/VT escape sequences (``"\\x1b[2J"`` clears a terminal), other C0 and C1 control characters,
bidirectional overrides (U+202E turns ``evil\\u202eftn.exe`` into ``evilexe.ntf`` on screen) and other
invisible format characters. Standard library only: the Slicer panel imports it without PyTorch.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["printable"]

# CSI (ESC [ ... final), OSC (ESC ] ... BEL or ST), other two-character escapes (ESC + one character), and
# the 8-bit CSI/OSC introducers: removed whole, so that no "[2J" remnant is left behind.
_ESCAPES = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]"
    r"|(?:\x1b\]|\x9d)[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b[ -~]?"
)
_LINE_BREAKS = frozenset("\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029")


def _keep(char: str) -> bool:
    """False for control (Cc), format (Cf: bidi overrides, zero-width), surrogate, private-use, unassigned."""
    return not unicodedata.category(char).startswith("C")


def printable(text: object, newlines: bool = False) -> str:
    """`text` without escape sequences, control or format characters.

    Args:
        text: any value; non-strings are converted with ``str``.
        newlines: keep line breaks (``\\n``; ``\\r\\n`` and other breaks become ``\\n``), for multi-line
            fields such as a card's description; otherwise every line break and tab becomes one space.

    Returns:
        The text with every removed character gone (a tab or line break replaced by a space or ``\\n``).
    """
    text = _ESCAPES.sub("", str(text)).replace("\r\n", "\n")
    out = []
    for char in text:
        if char in _LINE_BREAKS:
            out.append("\n" if newlines else " ")
        elif char == "\t":
            out.append(" ")
        elif _keep(char):
            out.append(char)
    return "".join(out)
