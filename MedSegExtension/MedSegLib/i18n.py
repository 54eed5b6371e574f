"""Translatable text for the bridge: ``tr(text)`` in Slicer, the text itself elsewhere.

Slicer translates a module's strings with ``slicer.i18n.tr``, imported as ``_``, whose context is taken from the
calling file: ``MedSegLib.run`` for ``MedSegLib/run.py``. This ``tr`` keeps that context (the caller's file, not this
one) and Slicer's guard against a translation that lost a ``{placeholder}``, and returns the text unchanged where
there is no Slicer application (slicer-core in the tests, the web front end, the command line).

Call it as Slicer's modules do, ``from .i18n import tr as _`` then ``_("Read {name}").format(name=name)``: Slicer's
string extraction (``update_translations.py``) rewrites each ``_("literal")`` into ``translate("MedSegLib.run",
"literal")`` for Qt's lupdate, which then files it under the context this ``tr`` looks up. A bare ``tr("...")`` call
would be extracted with an empty context and never translated. One string literal per call, whole sentences,
formatted after translating: never ``_(f"Read {name}")``, never fragments joined with ``+``
(``Testing/engine/test_translatable_text.py`` checks this).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable

__all__ = ["context_of", "tr"]

_PLACEHOLDER = re.compile(r"(?<!\{)\{([^{}]+)\}(?!\})")


def context_of(filename: str) -> str:
    """Slicer's translation context of a source file: ``Package.module`` inside a package, else ``module``."""
    folder, name = os.path.split(filename)
    stem = name[:-3] if name.endswith(".py") else name
    if os.path.isfile(os.path.join(folder, "__init__.py")):
        return f"{os.path.basename(folder)}.{stem}"
    return stem


def _slicer_translate() -> Callable[[str, str], str] | None:
    """``slicer.i18n.translate`` when the Slicer application runs, else None."""
    try:
        from slicer import app  # noqa: F401  (absent from slicer-core: no application, nothing to translate)
        from slicer.i18n import translate
    except ImportError:
        return None
    return translate


def tr(text: str) -> str:
    """``text`` in the application's language (context: the calling file), or unchanged without Slicer's app."""
    translate = _slicer_translate()
    if translate is None:
        return text
    translated = translate(context_of(sys._getframe(1).f_code.co_filename), text)
    if not isinstance(translated, str) or set(_PLACEHOLDER.findall(text)) != set(_PLACEHOLDER.findall(translated)):
        return text  # a translation that lost or renamed a {placeholder} would fail in .format()
    return translated
