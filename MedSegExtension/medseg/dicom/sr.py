"""DICOM SR TID 1500 (Measurement Report, highdicom ``Comprehensive3DSR``) of a MedSeg SEG's segments.

Per segment, one Volumetric ROI group that references the segment (``ReferencedSegment``: the SEG's SOP
instance and segment number, tracking UID and ID shared with the SEG) and holds:
- Volume (SCT 118565006) in mL (UCUM ``mL``, built by hand: pydicom has no code for it);
- Diameter (SCT 81827009), derivation Maximum: the largest distance between two voxel centres, mm;
- the mean intensity in the segment: for CT Attenuation Coefficient (DCM 112031) in Hounsfield units
  (UCUM ``[hnsf'U]``), otherwise Mean (SCT 373098007) without unit (UCUM ``1``, "no units");
- when the result has a volume interval (a card's calibrated interval, or the TTA range), its two ends as two
  more Volume measurements with derivation Minimum and Maximum: standard codes any TID 1500 reader shows, where
  a custom qualifier would not be understood (what kind of interval it is, is in the JSON report).
When the caller knows what a clinician changed (``edits``: :func:`medseg.edits.compare_masks` of the AI's mask
against the exported one), each group also says so:
- a qualitative evaluation "Edited after automatic segmentation" (``99MEDSEG`` E0001) = Yes or No (SCT 373066001 /
  373067005);
- for an edited segment only: the AI's volume as a second Volume (SCT 118565006, mL) whose Measurement Method is
  "Automatic segmentation before editing" (``99MEDSEG`` E0002), the volume added (E0003) and removed (E0004) by
  the edit in mL, the Dice coefficient between the AI and the edited mask (E0005, UCUM ``1``) and their HD95
  (E0006, mm; left out when undefined).
DICOM has no standard concept for these, so they use MedSeg's private coding scheme ``99MEDSEG`` (a ``99``
prefix marks a private scheme, PS3.16 section 8), declared in the SR's Coding Scheme Identification Sequence;
the unit codes are UCUM. Without ``edits`` (edited or not is unknown, as in ``medseg export`` of a file) the
groups carry none of these items; whether the segmentation may have been edited is then only in the SEG's
algorithm type and the series description.
The finding type and category are the segment's property type and category. Observation context: the
device observer is MedSeg with the model name as its model; patient and study are copied from the source
series (highdicom takes them from the evidence).
"""

from __future__ import annotations

from collections.abc import Sequence

from .. import __version__
from ..card import ModelCard
from ..edits import EditStats
from ..measure import LabelMeasurement
from ..text import printable
from .seg import MANUFACTURER, _lo
from .source import SourceSeries

__all__ = ["EDIT_CODES", "PRIVATE_SCHEME", "SR_SERIES_NUMBER", "build_measurement_report"]

SR_SERIES_NUMBER = 9702
PRIVATE_SCHEME = "99MEDSEG"  # MedSeg's private coding scheme designator (PS3.16 section 8: private schemes start 99)
PRIVATE_SCHEME_NAME = "MedSeg private codes"
# value -> meaning (a CodeMeaning is at most 64 characters)
EDIT_CODES = {
    "edited": ("E0001", "Edited after automatic segmentation"),
    "ai_method": ("E0002", "Automatic segmentation before editing"),
    "added": ("E0003", "Volume added by editing"),
    "removed": ("E0004", "Volume removed by editing"),
    "dice": ("E0005", "Dice coefficient of automatic and edited segmentation"),
    "hd95": ("E0006", "Hausdorff distance 95 % of automatic and edited segmentation"),
}


def _units():
    import highdicom as hd

    return {"mL": hd.sr.CodedConcept("mL", "UCUM", "milliliter"), "mm": hd.sr.CodedConcept("mm", "UCUM", "millimeter"),
            "HU": hd.sr.CodedConcept("[hnsf'U]", "UCUM", "Hounsfield unit"), "1": hd.sr.CodedConcept("1", "UCUM",
                                                                                                    "no units")}


def build_measurement_report(seg_dataset, measurements: Sequence[LabelMeasurement], source: SourceSeries,
                             card: ModelCard, *, edited: bool = False, edits: Sequence[EditStats] | None = None):
    """A ``highdicom.sr.Comprehensive3DSR`` (TID 1500) with the measurements of each segment of `seg_dataset`.

    Args:
        seg_dataset: the SEG (``build_segmentation``): its segments are matched to `measurements` by label name.
        measurements: ``medseg.measure.measure_labels`` of the same label map (with the source image).
        source: the source series (the SR's evidence besides the SEG; patient and study come from it).
        card: the model (device observer model name).
        edited: said in the series description.
        edits: per label, the AI's mask against the exported one (matched to the measurements by label id): each
            group then says whether its segment was edited, and how much (module notes). None: not known.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    by_name = {_lo(printable(m.name)): m for m in measurements}
    by_id = None if edits is None else {e.label_id: e for e in edits}
    references = _referenced_segments(seg_dataset)
    groups = []
    for segment in seg_dataset.SegmentSequence:
        m = by_name.get(segment.SegmentLabel)
        if m is None:
            continue
        groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=segment.TrackingUID, identifier=segment.TrackingID),
            referenced_segment=references[segment.SegmentNumber],
            finding_type=_plain_code(segment.SegmentedPropertyTypeCodeSequence[0]),
            finding_category=_plain_code(segment.SegmentedPropertyCategoryCodeSequence[0]),
            measurements=_measurements(m, source.modality) + _edit_measurements(by_id, m.label_id),
            qualitative_evaluations=_edit_evaluation(by_id, m.label_id)))
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(), name=MANUFACTURER, manufacturer_name=MANUFACTURER, model_name=_lo(card.name)))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.SCT.ImagingProcedure, imaging_measurements=groups)
    sr = hd.sr.Comprehensive3DSR(
        evidence=[*source.datasets, seg_dataset], content=report[0], series_instance_uid=generate_uid(),
        series_number=SR_SERIES_NUMBER, sop_instance_uid=generate_uid(), instance_number=1,
        manufacturer=MANUFACTURER, is_complete=True,
        series_description=_lo(f"MedSeg {card.name} measurements" + (" (edited)" if edited else "")),
        software_versions=f"MedSeg {__version__}")
    if by_id is not None:
        _declare_private_scheme(sr)
    return sr


def _private(key: str):
    import highdicom as hd

    value, meaning = EDIT_CODES[key]
    return hd.sr.CodedConcept(value, PRIVATE_SCHEME, meaning)


def _declare_private_scheme(dataset) -> None:
    """Coding Scheme Identification Sequence (0008,0110): the private scheme's designator and name."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DicomSequence

    item = Dataset()
    item.CodingSchemeDesignator = PRIVATE_SCHEME
    item.CodingSchemeName = PRIVATE_SCHEME_NAME
    item.CodingSchemeResponsibleOrganization = MANUFACTURER
    items = list(getattr(dataset, "CodingSchemeIdentificationSequence", []))
    dataset.CodingSchemeIdentificationSequence = DicomSequence([*items, item])


def _edit_evaluation(by_id: dict[int, EditStats] | None, label_id: int) -> list | None:
    """Edited: Yes / No, when edits are known."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    if by_id is None:
        return None
    stats = by_id.get(label_id)
    edited = stats is None or stats.edited  # a segment without an AI counterpart was drawn by the user
    return [hd.sr.QualitativeEvaluation(name=_private("edited"), value=codes.SCT.Yes if edited else codes.SCT.No)]


def _edit_measurements(by_id: dict[int, EditStats] | None, label_id: int) -> list:
    """How much an edited segment changed: AI volume, mL added and removed, Dice and HD95 (module notes)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    stats = None if by_id is None else by_id.get(label_id)
    if stats is None or not stats.edited:
        return []
    unit = _units()
    out = [hd.sr.Measurement(name=codes.SCT.Volume, value=stats.ai_volume_ml, unit=unit["mL"],
                             method=_private("ai_method")),
           hd.sr.Measurement(name=_private("added"), value=stats.added_ml, unit=unit["mL"]),
           hd.sr.Measurement(name=_private("removed"), value=stats.removed_ml, unit=unit["mL"]),
           hd.sr.Measurement(name=_private("dice"), value=stats.dice, unit=unit["1"])]
    if stats.hd95_mm is not None:
        out.append(hd.sr.Measurement(name=_private("hd95"), value=stats.hd95_mm, unit=unit["mm"]))
    return out


def _referenced_segments(seg) -> dict:
    """Segment number -> ``ReferencedSegment`` (the SEG and the source instances of its frames), as highdicom's
    ``ReferencedSegment.from_segmentation`` makes it, in one pass over the frames instead of one per segment."""
    import highdicom as hd

    sources: dict[int, dict[str, str]] = {int(s.SegmentNumber): {} for s in seg.SegmentSequence}
    shared = seg.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in seg else None
    for frame in seg.PerFrameFunctionalGroupsSequence:
        # a SEG of one segment has its identification in the shared functional groups (highdicom does so)
        identification = frame if "SegmentIdentificationSequence" in frame else shared
        number = int(identification.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        for derivation in getattr(frame, "DerivationImageSequence", []):
            for image in getattr(derivation, "SourceImageSequence", []):
                sources[number].setdefault(image.ReferencedSOPInstanceUID, image.ReferencedSOPClassUID)
    return {number: hd.sr.ReferencedSegment(
        sop_class_uid=seg.SOPClassUID, sop_instance_uid=seg.SOPInstanceUID, segment_number=number,
        source_images=[hd.sr.SourceImageForSegmentation(cls, uid) for uid, cls in images.items()])
        for number, images in sources.items()}


def _plain_code(item):
    """A code item's value, scheme and meaning only (a SEG's type item may carry a modifier sequence)."""
    import highdicom as hd

    return hd.sr.CodedConcept(item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning)


def _measurements(m: LabelMeasurement, modality: str) -> list:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    unit = _units()
    out = [hd.sr.Measurement(name=codes.SCT.Volume, value=m.volume_ml, unit=unit["mL"])]
    if m.volume_interval_ml is not None:
        low, high = m.volume_interval_ml
        out += [hd.sr.Measurement(name=codes.SCT.Volume, value=low, unit=unit["mL"], derivation=codes.SCT.Minimum),
                hd.sr.Measurement(name=codes.SCT.Volume, value=high, unit=unit["mL"], derivation=codes.SCT.Maximum)]
    if m.largest_diameter_mm is not None:
        out.append(hd.sr.Measurement(name=codes.SCT.Diameter, value=m.largest_diameter_mm, unit=unit["mm"],
                                     derivation=codes.SCT.Maximum))
    if m.intensity_mean is not None:
        if modality == "CT":
            out.append(hd.sr.Measurement(name=codes.DCM.AttenuationCoefficient, value=m.intensity_mean,
                                         unit=unit["HU"], derivation=codes.SCT.Mean))
        else:
            out.append(hd.sr.Measurement(name=codes.SCT.Mean, value=m.intensity_mean, unit=unit["1"]))
    return out
