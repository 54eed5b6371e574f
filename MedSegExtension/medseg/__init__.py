"""MedSeg engine: U-Net family segmentation networks, checkpoints, inference, measurement.

The engine never imports slicer, qt, ctk or vtk; it runs anywhere torch runs.
"""

__version__ = "0.1.0"
