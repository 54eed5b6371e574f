"""What the clinician changed, on the real Slicer core: the AI's mask kept with the result, edits measured."""

from __future__ import annotations

import numpy as np
import pytest
import slicer
from bridge_support import add_volume, application_modules, hippocampus_card, synthetic_result

from medseg.edits import compare_masks
from MedSegLib.corrections import AI_MASK_ROLE, EDITED_ATTRIBUTE, ai_labels, ai_mask_node
from MedSegLib.headless import application_scene
from MedSegLib.run import RunInputs, apply
from MedSegLib.segmentation import labelmap_from_segmentation
from MedSegLib.tables import EDIT_COLUMNS, recompute_table, table_rows
from MedSegLib.volumes import geometry_from_volume


@pytest.fixture
def applied(scene, hippocampus):
    array, geometry, labels = hippocampus
    volume = add_volume(scene, array, geometry, "hippocampus_001")
    inputs = RunInputs(array[None], geometry, volume.GetID(), volume.GetName(), (volume.GetID(),))
    result = apply(scene, inputs, synthetic_result(array, geometry, labels, hippocampus_card()))
    return volume, inputs, scene.GetNodeByID(result.segmentation_id), scene.GetNodeByID(result.table_id), labels


def test_the_ai_mask_is_kept_hidden_with_the_result(scene, applied):
    _, _, segmentation, table, labels = applied
    node = ai_mask_node(segmentation)
    assert node.IsA("vtkMRMLLabelMapVolumeNode") and node.GetHideFromEditors()
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    assert not sh.GetItemByDataNode(node)  # not in the Data module's tree
    assert np.array_equal(ai_labels(segmentation), labels)
    rows = table_rows(table)  # a fresh result: nothing edited, AI volume == corrected volume
    assert [r["edited"] for r in rows] == ["no", "no"]
    assert all(r["ai_volume_ml"] == r["corrected_volume_ml"] == r["volume_ml"] and r["edit_dice"] == 1.0 for r in rows)


def test_edits_are_measured_as_the_engine_compares_the_exported_masks(scene, applied, monkeypatch):
    volume, _, segmentation, table, labels = applied
    monkeypatch.setattr(slicer, "modules", application_modules(scene), raising=False)
    anterior = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, "Segment_1", volume)
    ks = np.flatnonzero(anterior.any(axis=(1, 2)))
    anterior[ks[-3]:] = 0  # erase the top slices
    slicer.util.updateSegmentBinaryLabelmapFromArray(anterior, segmentation, "Segment_1", volume)
    posterior = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, "Segment_2", volume)
    k, j, i = (int(np.median(a)) for a in np.nonzero(labels == 2))
    posterior[k - 2:k + 3, j - 2:j + 3, i + 2:i + 9] = 1  # paint a block, partly outside the AI's mask
    slicer.util.updateSegmentBinaryLabelmapFromArray(posterior, segmentation, "Segment_2", volume)

    rows = table_rows(recompute_table(segmentation))
    corrected = labelmap_from_segmentation(segmentation, volume, ["Segment_1", "Segment_2"], [1, 2])
    ai = slicer.util.arrayFromVolume(segmentation.GetNodeReference(AI_MASK_ROLE))
    expected = compare_masks(ai, corrected, geometry_from_volume(volume),
                             {1: "anterior hippocampus", 2: "posterior hippocampus"})
    for row, stats in zip(rows, expected, strict=True):
        assert row["edited"] == "yes" and stats.edited
        assert row["ai_volume_ml"] == pytest.approx(stats.ai_volume_ml, rel=1e-12)
        assert row["corrected_volume_ml"] == pytest.approx(stats.corrected_volume_ml, rel=1e-12)
        assert row["corrected_volume_ml"] == pytest.approx(row["volume_ml"], rel=1e-12)
        assert (row["edit_dice"], row["edit_hd95_mm"]) == pytest.approx((stats.dice, stats.hd95_mm), rel=1e-12)
        assert (row["added_ml"], row["removed_ml"]) == pytest.approx((stats.added_ml, stats.removed_ml), rel=1e-12)
    assert rows[0]["removed_ml"] > 0 and rows[0]["added_ml"] == 0 and rows[1]["added_ml"] > 0
    assert 0 < rows[0]["edit_dice"] < 1 and rows[1]["edit_hd95_mm"] > 0
    assert table.GetAttribute(EDITED_ATTRIBUTE) == "1"
    assert table.GetColumnUnitLabel("added_ml") == "mL" and {c.key for c in EDIT_COLUMNS} <= set(rows[0])


def test_a_user_segment_is_all_added_and_a_deleted_one_makes_the_result_edited(scene, applied, monkeypatch):
    volume, _, segmentation, table, labels = applied
    monkeypatch.setattr(slicer, "modules", application_modules(scene), raising=False)
    recompute_table(segmentation)
    assert table.GetAttribute(EDITED_ATTRIBUTE) == "0"
    segmentation.GetSegmentation().RemoveSegment("Segment_1")
    segmentation.GetSegmentation().AddEmptySegment("lesion", "lesion", (1.0, 0.0, 0.0))
    lesion = np.zeros_like(labels)
    lesion[2:5, 2:5, 2:5] = 1
    slicer.util.updateSegmentBinaryLabelmapFromArray(lesion, segmentation, "lesion", volume)
    rows = {r["name"]: r for r in table_rows(recompute_table(segmentation))}
    assert rows["posterior hippocampus"]["edited"] == "no"
    assert rows["lesion"]["label_id"] == 3 and rows["lesion"]["ai_volume_ml"] == 0.0
    assert rows["lesion"]["added_ml"] == pytest.approx(rows["lesion"]["volume_ml"]) and rows["lesion"]["edit_dice"] == 0
    assert rows["lesion"]["edit_hd95_mm"] is None and table.GetAttribute(EDITED_ATTRIBUTE) == "1"


def test_the_ai_mask_follows_a_replacing_run_and_survives_a_failed_one(scene, applied, hippocampus, monkeypatch):
    _, inputs, segmentation, _, labels = applied
    node_id = ai_mask_node(segmentation).GetID()
    second = labels.copy()
    second[second == 2] = 1
    card = hippocampus_card()
    apply(scene, inputs, synthetic_result(hippocampus[0], hippocampus[1], second, card))
    assert ai_mask_node(segmentation).GetID() == node_id and np.array_equal(ai_labels(segmentation), second)

    def fail(*args, **kwargs):
        raise MemoryError("no memory for the table")

    monkeypatch.setattr("MedSegLib.run.fill_table", fail)
    with pytest.raises(MemoryError):
        apply(scene, inputs, synthetic_result(hippocampus[0], hippocampus[1], labels, card))
    assert ai_mask_node(segmentation).GetID() == node_id and np.array_equal(ai_labels(segmentation), second)


def test_the_ai_mask_survives_saving_and_reloading_the_scene(scene, applied, tmp_path):
    """As Save does: the visible nodes written by their storage nodes (the Save dialog lists only those), then the
    scene file; the hidden AI mask is written by the scene itself (Slicer >= 5.12: ``<scene>_Private``)."""
    if not hasattr(scene, "GetPrivateStorableNodesModifiedSinceRead"):
        pytest.skip("this Slicer core (< 5.12) does not save hidden storable nodes with the scene")
    volume, _, segmentation, _, labels = applied
    scene.SetRootDirectory(str(tmp_path))
    for node in (volume, segmentation):
        node.AddDefaultStorageNode()
        node.GetStorageNode().SetFileName(str(tmp_path / f"{node.GetID()}.nrrd"))
        assert node.GetStorageNode().WriteData(node)
    assert scene.GetPrivateStorableNodesModifiedSinceRead()  # the AI mask, to be written by Commit
    scene.SetURL(str(tmp_path / "scene.mrml"))
    assert scene.Commit()
    assert [p.name for p in (tmp_path / "scene_Private").iterdir()]  # written beside the scene, not by us
    segmentation_id = segmentation.GetID()
    with application_scene() as reloaded:
        reloaded.SetURL(str(tmp_path / "scene.mrml"))
        assert reloaded.Connect()
        node = reloaded.GetNodeByID(segmentation_id)
        mask = ai_mask_node(node)
        assert mask is not None and mask.GetHideFromEditors()
        assert np.array_equal(slicer.util.arrayFromVolume(mask), labels)
