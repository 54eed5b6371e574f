"""Sending DICOM files to a PACS: DICOMweb STOW-RS (dicomweb-client) or DIMSE C-STORE (pynetdicom).

Every file is read and checked before anything is sent (a DICOM Part 10 file with SOP Class, SOP Instance,
Study and Series UIDs, no SOP Instance UID twice), so a bad file never leaves a series half-sent. Instances are
then sent one at a time, in order, and each counts as sent only once the server confirmed it (STOW-RS: listed in
the response's ReferencedSOPSequence; C-STORE: a success or warning status). The first failure stops the send;
the `SendReport` names the instances sent, the one that failed and why, and those not sent. Sending an instance
again is harmless (the PACS keys it by its SOP Instance UID), so a retry of the whole command is safe.

Connection errors, timeouts and server errors (HTTP 5xx) are retried `retries` times with exponential backoff;
a refusal (HTTP 4xx, a rejected association, a failure status) never is. Credentials come from a config file or
the environment (`load_credentials`), never from the command line, and never appear in a log or an error.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import socket
import stat
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

__all__ = [
    "CONFIG_ENV",
    "Credentials",
    "DicomWebTarget",
    "DimseTarget",
    "Instance",
    "SendReport",
    "check_instances",
    "collect_files",
    "default_config_path",
    "load_credentials",
    "parse_host_port",
    "send",
]

log = logging.getLogger(__name__)

CONFIG_ENV = "MEDSEG_PACS_CONFIG"  # path of the credentials file (default: ~/.config/medseg/pacs.json)
USER_ENV, PASSWORD_ENV, TOKEN_ENV = "MEDSEG_PACS_USER", "MEDSEG_PACS_PASSWORD", "MEDSEG_PACS_TOKEN"
_CONFIG_KEYS = ("username", "password", "token", "ca_bundle")
_REQUIRED_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
_SKIPPED_NAMES = ("DICOMDIR",)  # a media directory, not an instance to store
_MAX_BACKOFF_S = 8.0
_WARNING_STATUSES = (0x0001, 0xB000, 0xB006, 0xB007)  # C-STORE: stored, with coercion or elements discarded
_T = TypeVar("_T")


@dataclass(frozen=True)
class Credentials:
    """HTTP credentials for DICOMweb: basic auth (username + password) or a bearer token; never printed."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    ca_bundle: str | None = None

    @property
    def secrets(self) -> tuple[str, ...]:
        return tuple(s for s in (self.password, self.token) if s)

    def __post_init__(self) -> None:
        if self.token and (self.username or self.password):
            raise ValueError("PACS credentials: give either a token or a user name and password, not both")
        if self.password and not self.username:
            raise ValueError(f"PACS credentials: a password without a user name; set {USER_ENV} or 'username'")


@dataclass(frozen=True)
class DicomWebTarget:
    """A DICOMweb service root (``https://pacs/dicom-web``); ``ca_bundle`` a PEM file of trusted CAs."""

    url: str
    ca_bundle: str | None = None

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"--dicomweb {self.url!r}: expected an http:// or https:// URL such as "
                             "https://pacs.example.org/dicom-web")
        if parts.username or parts.password:
            raise ValueError(f"--dicomweb: the URL holds credentials; remove them and set {USER_ENV} and "
                             f"{PASSWORD_ENV} (or {TOKEN_ENV}) in the environment or {default_config_path()}")

    def __str__(self) -> str:
        return self.url


@dataclass(frozen=True)
class DimseTarget:
    """A DICOM node for C-STORE: host, port, our AE title (calling) and the server's (called)."""

    host: str
    port: int
    calling_aet: str
    called_aet: str

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError(f"--dimse port {self.port}: expected 1-65535")
        for option, aet in (("--aet", self.calling_aet), ("--called-aet", self.called_aet)):
            if not aet.strip() or len(aet) > 16 or "\\" in aet or not aet.isascii() or not aet.isprintable():
                raise ValueError(f"{option} {aet!r}: an AE title is 1-16 printable ASCII characters without '\\'")

    def __str__(self) -> str:
        return f"{self.called_aet}@{self.host}:{self.port}"


@dataclass(frozen=True)
class Instance:
    """One checked file: where it is and the UIDs that identify it."""

    path: Path
    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str
    series_uid: str
    transfer_syntax: str


@dataclass(frozen=True)
class SendReport:
    """What a send did: ``sent`` were confirmed by the server; ``failed`` (with ``error``) and ``not_sent`` were not."""

    target: str
    sent: tuple[Instance, ...]
    not_sent: tuple[Instance, ...] = ()
    failed: Instance | None = None
    error: str | None = None
    warnings: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        return self.error is None and self.failed is None and not self.not_sent

    @property
    def total(self) -> int:
        return len(self.sent) + len(self.not_sent) + (self.failed is not None)

    def lines(self) -> list[str]:
        """The report for people: every instance sent and every one not sent, by file."""
        if self.complete:
            series = {i.series_uid for i in self.sent}
            return [f"sent {len(self.sent)} instance(s) of {len(series)} series to {self.target}; every one "
                    "confirmed by the server", *(f"  warning: {w}" for w in self.warnings)]
        lines = [f"INCOMPLETE: sent {len(self.sent)} of {self.total} instance(s) to {self.target}"]
        lines += [f"  sent:     {i.path} ({i.sop_instance_uid})" for i in self.sent]
        if self.failed is not None:
            lines.append(f"  FAILED:   {self.failed.path} ({self.failed.sop_instance_uid}): {self.error}")
        lines += [f"  NOT sent: {i.path} ({i.sop_instance_uid})" for i in self.not_sent]
        lines += [f"  warning: {w}" for w in self.warnings]
        return lines

    def to_dict(self) -> dict[str, object]:
        def uids(items: Iterable[Instance]) -> list[dict[str, str]]:
            return [{"path": str(i.path), "sop_instance_uid": i.sop_instance_uid} for i in items]
        return {"target": self.target, "complete": self.complete, "sent": uids(self.sent),
                "failed": uids([self.failed] if self.failed else []), "error": self.error,
                "not_sent": uids(self.not_sent), "warnings": list(self.warnings)}


# --- credentials ---------------------------------------------------------------------------------------------


def default_config_path() -> Path:
    """``$XDG_CONFIG_HOME/medseg/pacs.json`` (``~/.config/medseg/pacs.json``)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "medseg" / "pacs.json"


def load_credentials(environ: dict[str, str] | None = None) -> Credentials:
    """Credentials from the config file, overridden key by key by the environment.

    The file is ``$MEDSEG_PACS_CONFIG`` (which must exist when set) or `default_config_path` (optional): a JSON
    object with ``username``, ``password``, ``token`` and ``ca_bundle``, each optional. The environment's
    ``MEDSEG_PACS_USER``, ``MEDSEG_PACS_PASSWORD`` and ``MEDSEG_PACS_TOKEN`` take precedence. Errors name the
    file and the key, never a value.
    """
    env = os.environ if environ is None else environ
    values = _read_config(env)
    for key, name in (("username", USER_ENV), ("password", PASSWORD_ENV), ("token", TOKEN_ENV)):
        if env.get(name):
            values[key] = env[name]
    return Credentials(**values)


def _read_config(env: dict[str, str] | os._Environ[str]) -> dict[str, str]:
    explicit = env.get(CONFIG_ENV)
    path = Path(explicit) if explicit else default_config_path()
    if not path.is_file():
        if explicit:
            raise FileNotFoundError(f"{CONFIG_ENV}={path}: no such file; create it (JSON: username, password or "
                                    "token, ca_bundle) or unset the variable")
        return {}
    if os.name == "posix" and path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("%s is readable by other users; protect it with: chmod 600 %s", path, path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:  # the messages give a position, never the text
        raise ValueError(f"{path}: not valid JSON ({exc.__class__.__name__} at {getattr(exc, 'pos', '?')}); "
                         f"expected an object with {', '.join(_CONFIG_KEYS)}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object with {', '.join(_CONFIG_KEYS)}")
    unknown = sorted(str(k) for k in data if k not in _CONFIG_KEYS)
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(_CONFIG_KEYS)}")
    bad = sorted(k for k, v in data.items() if v is not None and not isinstance(v, str))
    if bad:
        raise ValueError(f"{path}: {', '.join(bad)} must be text")
    return {k: v for k, v in data.items() if v}


def _scrub(text: str, credentials: Credentials) -> str:
    for secret in credentials.secrets:
        text = text.replace(secret, "***")
    return text


# --- the files -----------------------------------------------------------------------------------------------


def collect_files(paths: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Files given, and every file under folders given (sorted; hidden files and DICOMDIR skipped), once each."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.name not in _SKIPPED_NAMES
                           and not any(part.startswith(".") for part in f.relative_to(p).parts))
            if not found:
                raise FileNotFoundError(f"{p}: the folder holds no files to send")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or folder; nothing was sent")
    unique: dict[Path, Path] = {}  # the same file given twice (another spelling, a link) is sent once
    for f in files:
        unique.setdefault(f.resolve(), f)
    return list(unique.values())  # named as the user gave them


def check_instances(files: Sequence[Path]) -> list[Instance]:
    """Read each file's header and check it can be stored; a ValueError names the file and the problem."""
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.uid import UID

    instances, seen = [], {}
    for path in files:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, EOFError, ValueError, KeyError) as exc:
            raise ValueError(f"{path}: not a DICOM file ({exc.__class__.__name__}); remove it from the list; "
                             "nothing was sent") from None
        syntax = str(getattr(ds.file_meta, "TransferSyntaxUID", "") or "")
        if not syntax:
            raise ValueError(f"{path}: no transfer syntax in its file meta header (not a DICOM Part 10 file); "
                             "nothing was sent")
        uids = {}
        for keyword in _REQUIRED_UIDS:
            value = str(ds.get(keyword, "") or "").strip()
            if not value or not UID(value).is_valid:
                what = "no" if not value else f"an invalid ({value[:70]!r})"
                raise ValueError(f"{path}: {what} {keyword}; a PACS cannot store it without a valid one (fix or "
                                 "regenerate the UIDs); nothing was sent")
            uids[keyword] = value
        sop = uids["SOPInstanceUID"]
        if sop in seen:
            raise ValueError(f"{path}: same SOP Instance UID as {seen[sop]} ({sop}); a PACS would keep only one; "
                             "nothing was sent")
        seen[sop] = path
        instances.append(Instance(path, uids["SOPClassUID"], sop, uids["StudyInstanceUID"],
                                  uids["SeriesInstanceUID"], syntax))
    return instances


# --- sending -------------------------------------------------------------------------------------------------


class _Retryable(Exception):
    """A connection error, timeout or server error: worth another attempt."""


class _Refused(Exception):
    """The server refused (4xx, a rejected association, a failure status): another attempt would fail too."""


def send(paths: Sequence[str | os.PathLike[str]], target: DicomWebTarget | DimseTarget, *, timeout: float = 30.0,
         retries: int = 2, credentials: Credentials | None = None, backoff: float = 1.0) -> SendReport:
    """Send DICOM files (or folders of them) to a PACS; every file is checked before anything is sent.

    Args:
        paths: files and folders (searched recursively).
        target: the DICOMweb service or the DICOM node.
        timeout: seconds to wait for a connection and for each answer.
        retries: further attempts (per HTTP request; per association, counted again after progress) after a
            connection error, timeout or server error (5xx), waiting
            ``backoff`` s, then twice as long each time (at most 8 s); refusals are never retried.
        credentials: for DICOMweb; default `load_credentials()` (config file and environment).
        backoff: the first wait between attempts, in seconds.

    Returns:
        The report; ``report.complete`` is False after a failure, which it describes.

    Raises:
        ValueError, FileNotFoundError: a file is missing, not DICOM or lacks a UID (nothing was sent).
    """
    if not timeout > 0 or retries < 0:
        raise ValueError(f"--timeout {timeout} and --retries {retries}: expected a timeout > 0 s and retries >= 0")
    if isinstance(target, DicomWebTarget):
        _require("dicomweb_client", "dicomweb-client")
        bundle = target.ca_bundle or (credentials.ca_bundle if credentials else None)
        if bundle and not Path(bundle).is_file():
            raise FileNotFoundError(f"--ca-bundle {bundle}: no such file; give the PEM file of the certificate "
                                    "authorities to trust; nothing was sent")
    else:
        _require("pynetdicom", "pynetdicom")
    instances = check_instances(collect_files(paths))
    if isinstance(target, DicomWebTarget):
        creds = load_credentials() if credentials is None else credentials
        return _send_dicomweb(instances, target, creds, timeout, retries, backoff)
    return _send_dimse(instances, target, timeout, retries, backoff)


def _attempt(action: Callable[[], _T], retries: int, backoff: float, what: str) -> _T:
    """``action()``, again after each `_Retryable` up to ``retries`` times; the last error says how many tries."""
    for attempt in range(retries + 1):
        try:
            return action()
        except _Retryable as exc:
            if attempt == retries:
                tries = f" (after {retries + 1} attempts)" if retries else ""
                raise _Retryable(f"{exc}{tries}") from None
            wait = min(backoff * 2 ** attempt, _MAX_BACKOFF_S)
            log.warning("%s: %s; trying again in %.1f s (%d of %d)", what, exc, wait, attempt + 1, retries)
            time.sleep(wait)
    raise AssertionError("unreachable")


def _require(module: str, package: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise ValueError(f"sending to a PACS this way needs the Python package {package}: "
                         f"pip install {package} (or: pip install 'medseg[pacs]')")


def _is_local(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _send_dicomweb(instances: list[Instance], target: DicomWebTarget, creds: Credentials, timeout: float,
                   retries: int, backoff: float) -> SendReport:
    import requests
    from dicomweb_client.api import DICOMwebClient

    parts = urlsplit(target.url)
    session = requests.Session()
    ca_bundle = target.ca_bundle or creds.ca_bundle
    session.verify = ca_bundle or True  # https: certificates are always checked
    if ca_bundle:  # else requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override it; keep the proxies
        session.trust_env = False
        session.proxies.update(requests.utils.get_environ_proxies(target.url))
    if creds.token:
        session.headers["Authorization"] = f"Bearer {creds.token}"
    elif creds.username:
        session.auth = (creds.username, creds.password or "")
    if creds.secrets and parts.scheme == "http" and not _is_local(parts.hostname or ""):
        log.warning("credentials are sent unencrypted to %s over http://; use an https:// URL", parts.hostname)
    client = DICOMwebClient(target.url.rstrip("/"), session=session, timeout=(timeout, timeout))
    client.set_http_retry_params(retry=False)  # ours: bounded, with backoff, and never on 4xx
    sent: list[Instance] = []
    try:
        for n, inst in enumerate(instances):
            try:
                _attempt(lambda i=inst: _stow(client, i, timeout, creds), retries, backoff, str(inst.path))
            except (_Retryable, _Refused) as exc:
                return SendReport(str(target), tuple(sent), tuple(instances[n + 1:]), inst, _scrub(str(exc), creds))
            sent.append(inst)
            log.info("sent %s (%s)", inst.path, inst.sop_instance_uid)
    finally:
        session.close()
    return SendReport(str(target), tuple(sent))


def _stow(client: object, inst: Instance, timeout: float, creds: Credentials) -> None:
    """One STOW-RS request for one instance, confirmed by the server's response."""
    import pydicom
    import requests

    try:
        ds = pydicom.dcmread(inst.path)
    except (OSError, ValueError) as exc:
        raise _Refused(f"cannot read it any more ({exc.__class__.__name__}); was it changed during the send?") from None
    host = urlsplit(client.base_url).netloc  # type: ignore[attr-defined]
    try:
        answer = client.store_instances([ds])  # type: ignore[attr-defined]
    except requests.exceptions.SSLError as exc:
        raise _Refused(f"the TLS certificate of {host} could not be verified ({_reason(exc)}); if the server uses "
                       "a private certificate authority, pass its PEM file with --ca-bundle") from None
    except (requests.exceptions.ConnectTimeout, requests.exceptions.ReadTimeout):
        raise _Retryable(f"no answer from {host} within {timeout:g} s (a slow or overloaded server; a larger "
                         "--timeout may help)") from None
    except requests.exceptions.ConnectionError as exc:
        raise _Retryable(f"cannot connect to {host} ({_reason(exc)}): is the server running and the URL right?") \
            from None
    except requests.exceptions.HTTPError as exc:
        raise _http_error(exc, host, creds) from None
    _check_stow_answer(answer, inst)


def _reason(exc: BaseException) -> str:
    """The innermost cause of a requests error, shortened (its str repeats the whole connection pool)."""
    for _ in range(8):  # requests -> urllib3 MaxRetryError -> the socket's error
        inner = exc.__cause__ or getattr(exc, "reason", None) or (exc.args[0] if exc.args else None)
        if not isinstance(inner, BaseException):
            break
        exc = inner
    text = str(exc).split(": ", 1)[-1] if "object at 0x" in str(exc) else str(exc)
    return text.strip()[:200] or type(exc).__name__


def _http_error(exc: object, host: str, creds: Credentials) -> Exception:
    response = exc.response  # type: ignore[attr-defined]
    code = response.status_code if response is not None else 0
    body = _scrub(" ".join((response.text if response is not None else "").split())[:200], creds)
    detail = f"HTTP {code} {response.reason if response is not None else ''}".strip()
    detail += f": {body}" if body else ""
    if code >= 500:
        return _Retryable(f"server error from {host}: {detail}")
    if code in (401, 403):
        return _Refused(f"{host} refused the credentials ({detail}); set {USER_ENV} and {PASSWORD_ENV} "
                        f"(or {TOKEN_ENV}) or the config file {os.environ.get(CONFIG_ENV) or default_config_path()}")
    return _Refused(f"{host} refused the instance ({detail})")


def _check_stow_answer(answer: object, inst: Instance) -> None:
    """The STOW-RS response must list the instance as stored (some servers answer 200 for a rejected one)."""
    failed = {str(getattr(item, "ReferencedSOPInstanceUID", "")): getattr(item, "FailureReason", None)
              for item in getattr(answer, "FailedSOPSequence", None) or []}
    if inst.sop_instance_uid in failed:
        reason = failed[inst.sop_instance_uid]
        raise _Refused(f"the server refused it (STOW-RS FailureReason {hex(reason) if reason else 'not given'})")
    stored = {str(getattr(item, "ReferencedSOPInstanceUID", ""))
              for item in getattr(answer, "ReferencedSOPSequence", None) or []}
    if inst.sop_instance_uid not in stored:
        raise _Refused("the server answered without confirming that it stored the instance (not in the STOW-RS "
                       "response's ReferencedSOPSequence)")


def _send_dimse(instances: list[Instance], target: DimseTarget, timeout: float, retries: int,
                backoff: float) -> SendReport:
    """C-ECHO, then C-STORE of each instance on one association; a dropped one is opened again (``retries``)."""
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    ae = AE(ae_title=target.calling_aet)
    ae.connection_timeout = ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.add_requested_context(Verification)
    contexts = sorted({(i.sop_class_uid, i.transfer_syntax) for i in instances})
    if len(contexts) > 127:
        raise ValueError(f"{len(contexts)} different SOP class / transfer syntax pairs: one association takes at "
                         "most 127; send the files in smaller groups")
    for sop_class, syntax in contexts:
        ae.add_requested_context(sop_class, syntax)
    sent: list[Instance] = []
    warnings: list[str] = []
    failures, progress = 0, 0
    while len(sent) < len(instances):
        try:
            _store_on_association(ae, target, instances[len(sent):], sent, warnings)
        except _Retryable as exc:
            if len(sent) > progress:  # stored some since the last failure: a new one gets all its retries
                failures, progress = 0, len(sent)
            if failures < retries:
                wait = min(backoff * 2 ** failures, _MAX_BACKOFF_S)
                failures += 1
                log.warning("%s: %s; trying again in %.1f s (%d of %d)", target, exc, wait, failures, retries)
                time.sleep(wait)
                continue
            tries = f" (after {retries + 1} attempts)" if retries else ""
            return _failed(target, instances, sent, f"{exc}{tries}", warnings)
        except _Refused as exc:
            return _failed(target, instances, sent, str(exc), warnings)
    return SendReport(str(target), tuple(sent), warnings=tuple(warnings))


def _failed(target: DimseTarget, instances: list[Instance], sent: list[Instance], error: str,
            warnings: list[str]) -> SendReport:
    rest = instances[len(sent):]
    return SendReport(str(target), tuple(sent), tuple(rest[1:]), rest[0], error, tuple(warnings))


def _store_on_association(ae: object, target: DimseTarget, pending: list[Instance], sent: list[Instance],
                          warnings: list[str]) -> None:
    where = f"{target.host}:{target.port}"
    try:  # pynetdicom only logs why it could not connect: find out, for the message
        socket.create_connection((target.host, target.port), timeout=ae.connection_timeout).close()  # type: ignore[attr-defined]
    except OSError as exc:
        raise _Retryable(f"cannot connect to {where} ({exc.strerror or exc.__class__.__name__}): is the server "
                         "running and are the host and port right?") from None
    assoc = ae.associate(target.host, target.port, ae_title=target.called_aet)  # type: ignore[attr-defined]
    if assoc.is_rejected:
        raise _Refused(f"{where} rejected the association ({_rejection(assoc)}); check --called-aet (the server's "
                       f"AE title, {target.called_aet!r} given) and that the server accepts --aet "
                       f"{target.calling_aet!r}")
    if not assoc.is_established:
        raise _Retryable(f"cannot open a DICOM association with {where}: the server is down, unreachable, not a "
                         "DICOM port, or did not answer in time")
    try:
        echo = assoc.send_c_echo()
        if not echo or "Status" not in echo:
            raise _Retryable(f"{where} did not answer the C-ECHO (verification)")
        if echo.Status != 0:
            raise _Refused(f"{where} answered the C-ECHO with status 0x{echo.Status:04X}")
        for inst in pending:
            _store_one(assoc, inst, where, warnings)
            sent.append(inst)
            log.info("sent %s (%s)", inst.path, inst.sop_instance_uid)
    finally:
        if assoc.is_established:
            assoc.release()


def _store_one(assoc: object, inst: Instance, where: str, warnings: list[str]) -> None:
    from pynetdicom.status import code_to_category

    accepted = {(c.abstract_syntax, c.transfer_syntax[0]) for c in assoc.accepted_contexts}  # type: ignore[attr-defined]
    if (inst.sop_class_uid, inst.transfer_syntax) not in accepted:
        raise _Refused(f"{where} does not accept SOP class {inst.sop_class_uid} in transfer syntax "
                       f"{inst.transfer_syntax} (configure the server for it)")
    try:
        status = assoc.send_c_store(str(inst.path))  # type: ignore[attr-defined]
    except RuntimeError:  # pynetdicom: the association is no longer established
        raise _Retryable(f"{where} closed the association") from None
    if not status or "Status" not in status:
        raise _Retryable(f"{where} did not answer the C-STORE in time, or the association was aborted")
    code = int(status.Status)
    if code == 0:
        return
    if code in _WARNING_STATUSES:
        warnings.append(f"{inst.path}: stored with warning status 0x{code:04X} (the server changed or dropped some "
                        "elements)")
        return
    raise _Refused(f"{where} refused the C-STORE: status 0x{code:04X} ({code_to_category(code)})")


def _rejection(assoc: object) -> str:
    primitive = getattr(getattr(assoc, "acceptor", None), "primitive", None)
    parts = [getattr(primitive, name, None) for name in ("result_str", "reason_str")]
    return ", ".join(str(p) for p in parts if p) or "no reason given"


def parse_host_port(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:104`` for IPv6) -> (host, port)."""
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit():
        raise ValueError(f"--dimse {text!r}: expected HOST:PORT, such as pacs.example.org:104")
    return host, int(port)
