"""DICOM outputs: the source series of a DICOM-folder input, DICOM SEG and DICOM SR (TID 1500), with highdicom.

highdicom and pydicom are optional (the ``dicom`` extra); they are imported where they are used, so the rest
of the engine runs without them.
"""

from .seg import build_segmentation, dataset_bytes, segment_labels
from .source import SourceSeries, read_source, require_dicom_folder
from .sr import build_measurement_report

__all__ = ["SourceSeries", "build_measurement_report", "build_segmentation", "dataset_bytes", "read_source",
           "require_dicom_folder", "segment_labels"]
