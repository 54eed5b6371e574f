"""MedSeg in a web browser: a trame-slicer front end on the same bridge (``MedSegLib``) as the Slicer panel.

Optional (the ``web`` extra: trame-slicer and slicer-core); the engine (``medseg``) never imports this package.
``medseg serve`` starts it. One server process serves one user session: every browser tab that connects to it
shares the same scene (trame shares one state per server); run one process per user.
"""
