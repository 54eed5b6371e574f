"""`medseg serve`: the MedSeg workflow in a web browser (the ``MedSegWeb`` package, optional ``web`` extra).

The engine never imports the web package at load; this command imports it when it runs, and names the extra when
it is missing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

WEB_HINT = ("pip install 'medseg[web]' (trame-slicer 2.0.0 and slicer-layer-dm 2.0.0 with --no-deps, on slicer-core; "
            "scripts/setup.sh does it) and run from the source tree, where MedSegWeb sits beside medseg")


def add_serve_parser(sub) -> None:
    p = sub.add_parser("serve", help="serve the segmentation workflow as a web page (trame-slicer)",
                       description="Serve MedSeg's workflow (open a volume, pick a model, Segment with progress and "
                                   "Cancel, overlays, volume table, paint/erase with undo, download) as a web page "
                                   "rendered by the real Slicer core. Binds to 127.0.0.1; another --host needs "
                                   "--token. One server process serves one user session: every tab shares its "
                                   "scene; start one process per user.")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8080, help="TCP port (default 8080; 0: any free port)")
    p.add_argument("--token", default=None, help="secret the page URL must carry as ?secret=TOKEN (required for a "
                   "--host other than localhost; at least 16 characters)")
    p.add_argument("--data-root", type=Path, default=None, help="folder whose files the page may open by a "
                   "relative path (no '..', no links out of it); without it only uploads are possible")
    p.add_argument("--max-upload-mb", type=float, default=512.0, help="largest upload accepted (default 512)")
    p.set_defaults(func=cmd_serve)


def _import(module: str):
    """`module` of the web package (beside ``medseg`` in the source tree), or ValueError naming the extra."""
    import importlib

    beside = Path(__file__).resolve().parents[1]
    if (beside / "MedSegWeb").is_dir() and str(beside) not in sys.path:
        sys.path.append(str(beside))
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        raise ValueError(f"medseg serve needs {exc.name!r}, which is not installed: {WEB_HINT}") from None


def cmd_serve(args: argparse.Namespace) -> int:
    security = _import("MedSegWeb.security")  # pure Python: the options are checked before trame is imported
    options = security.ServeOptions(host=args.host, port=args.port, token=args.token, data_root=args.data_root,
                                    max_upload_mb=args.max_upload_mb)
    return _import("MedSegWeb.app").serve(options)
