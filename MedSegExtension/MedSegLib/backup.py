"""Detached copies of scene nodes, so that a failed update can put them back exactly as they were.

:func:`MedSegLib.run.apply` replaces an earlier result in place (the user's segmentation keeps its node ID, so
the Segment Editor and any script holding it stay attached). Before it changes such a node it saves a
:class:`NodeBackup`; should anything fail afterwards, :meth:`NodeBackup.restore` copies the saved content,
name, attributes and node references back into the same node. The copies are never added to the scene.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

__all__ = ["NodeBackup"]

log = logging.getLogger(__name__)


def _references(node) -> dict[str, list[str]]:
    roles = [node.GetNthNodeReferenceRole(n) for n in range(node.GetNumberOfNodeReferenceRoles())]
    return {role: [node.GetNthNodeReferenceID(role, n) for n in range(node.GetNumberOfNodeReferences(role))]
            for role in roles}


class NodeBackup:
    """Saved copies of nodes (with their display nodes) taken before they are modified.

    Args:
        nodes: the nodes to save; None entries are skipped, each node is saved once.
    """

    def __init__(self, nodes: Iterable = ()):
        self._saved: list[tuple[object, object, dict[str, list[str]]]] = []
        self._ids: set[str] = set()
        for node in nodes:
            self.add(node)

    def add(self, node) -> None:
        """Save `node` and its display nodes (call before changing them)."""
        if node is None or node.GetID() in self._ids:
            return
        self._ids.add(node.GetID())
        copy = node.GetScene().CreateNodeByClass(node.GetClassName())
        copy.Copy(node)  # deep: voxels, segments, table cells; name, attributes, display properties
        self._saved.append((node, copy, _references(node)))
        if node.IsA("vtkMRMLDisplayableNode"):
            for n in range(node.GetNumberOfDisplayNodes()):
                self.add(node.GetNthDisplayNode(n))

    def restore(self) -> None:
        """Put every saved node back as it was; a node that cannot be restored is logged, the others still are."""
        for node, copy, references in reversed(self._saved):
            try:
                was_modifying = node.StartModify()
                try:
                    node.Copy(copy)
                    for role in _references(node):
                        node.RemoveNodeReferenceIDs(role)
                    for role, ids in references.items():
                        for node_id in ids:
                            node.AddNodeReferenceID(role, node_id)
                finally:
                    node.EndModify(was_modifying)
            except Exception:
                log.exception("could not restore node %s after a failed update", node.GetID())
