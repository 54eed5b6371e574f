"""``medseg send``: DICOM files to a PACS by DICOMweb STOW-RS or DIMSE C-STORE, with an exact report."""

from __future__ import annotations

import argparse
import json
import logging

from .pacs import (
    CONFIG_ENV,
    PASSWORD_ENV,
    TOKEN_ENV,
    USER_ENV,
    DicomWebTarget,
    DimseTarget,
    default_config_path,
    parse_host_port,
    send,
)
from .text import printable

__all__ = ["SendError", "add_send_parser", "cmd_send"]


class SendError(ValueError):
    """A send that did not complete; the report above the error line lists what was and was not sent."""


def add_send_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "send", help="send DICOM files (SEG, SR, images) to a PACS",
        description="Send DICOM files, or folders of them, to a PACS by DICOMweb STOW-RS or DIMSE C-STORE. Every "
                    "file is checked first (DICOM, with its UIDs): a bad one stops the send before anything goes "
                    "out. Instances are sent one by one and count as sent once the server confirms them; after a "
                    "failure the report lists each instance sent and not sent, and the exit code is 2. Sending "
                    f"again is harmless. DICOMweb credentials are read from {USER_ENV} and {PASSWORD_ENV} (or "
                    f"{TOKEN_ENV}) or from a JSON file ({CONFIG_ENV}, default {default_config_path()}: username, "
                    "password or token, ca_bundle), never from the command line.")
    p.add_argument("inputs", nargs="+", metavar="FILE_OR_DIR", help="DICOM files or folders (searched recursively)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--dicomweb", metavar="URL", help="DICOMweb service root, e.g. https://pacs.example.org/"
                       "dicom-web (https certificates are verified)")
    where.add_argument("--dimse", metavar="HOST:PORT", help="DICOM node for C-STORE (C-ECHO first)")
    p.add_argument("--aet", default="MEDSEG", help="our AE title (calling) for --dimse (default MEDSEG)")
    p.add_argument("--called-aet", metavar="AET", help="the server's AE title, required with --dimse")
    p.add_argument("--ca-bundle", metavar="PEM", help="trusted certificate authorities for https (default: the "
                   "system's, or ca_bundle in the config file)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait to connect and for each answer "
                   "(default 30)")
    p.add_argument("--retries", type=int, default=2, help="further attempts after a connection error, timeout or "
                   "server error, waiting 1, 2, 4... s; refusals are never retried (default 2)")
    p.add_argument("--json", metavar="FILE", help="also write the report (sent, failed, not sent) as JSON")
    p.set_defaults(func=cmd_send)


def _target(args: argparse.Namespace) -> DicomWebTarget | DimseTarget:
    if args.dicomweb:
        if args.called_aet:
            raise ValueError("--called-aet is for --dimse; a DICOMweb URL names the service")
        return DicomWebTarget(args.dicomweb, ca_bundle=args.ca_bundle)
    if not args.called_aet:
        raise ValueError("--dimse needs --called-aet: the AE title of the server (ask its administrator)")
    host, port = parse_host_port(args.dimse)
    return DimseTarget(host, port, args.aet, args.called_aet)


def cmd_send(args: argparse.Namespace) -> int:
    if not getattr(args, "verbose", False):  # pynetdicom logs each failure as ERROR: our report says it once
        logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)
    report = send(args.inputs, _target(args), timeout=args.timeout, retries=args.retries)
    for line in report.lines():
        print(printable(line))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report.to_dict(), f, indent=2)
    if not report.complete:
        raise SendError(f"sent {len(report.sent)} of {report.total} instance(s) to {report.target}; "
                        f"{report.total - len(report.sent)} NOT sent (listed above): {report.error}")
    return 0
