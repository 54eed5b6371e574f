"""MedSeg's Slicer bridge: MRML nodes <-> engine arrays and geometry, display, tables, export.

It imports slicer and vtk but never qt, so it is tested in pytest on the real Slicer core (slicer-core).
"""
