"""The MedSeg module's widget helpers, beside ``MedSeg.py``: the logic facade (``logic``), the panel's parts as mixins
of ``MedSegWidget`` (``results``, ``learning``), small Qt helpers (``common``) and the Reload helper (``reloading``).

Layering: these import slicer and qt (``reloading`` and ``logic`` no qt) and call the bridge (``MedSegLib``); the engine
is imported only inside the functions that use it. Listed in ``CMakeLists.txt``'s ``MODULE_PYTHON_SCRIPTS``.
"""
