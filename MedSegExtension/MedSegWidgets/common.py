"""Small Qt helpers of the panel."""

import qt

from MedSegLib.panel import html_text


def nodeId(node):
    return node.GetID() if node is not None else None


def fillCombo(combo, items, selected=None) -> None:
    """Replace a combo box's entries with (text, data, tooltip) items and select `selected` data, without signals."""
    combo.blockSignals(True)
    combo.clear()
    for text, data, tooltip in items:
        combo.addItem(text, data)
        if tooltip:
            combo.setItemData(combo.count - 1, html_text(tooltip), qt.Qt.ToolTipRole)  # card text, shown verbatim
    combo.setCurrentIndex(combo.findData(selected) if selected is not None else -1)
    combo.blockSignals(False)
