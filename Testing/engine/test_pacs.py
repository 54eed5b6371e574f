"""`medseg send` against a real Orthanc (Debian packages orthanc + orthanc-dicomweb) started per test.

A tiny HTTP server of our own plays the servers Orthanc cannot be made into: a slow one, one that fails with
503 once, one that refuses an instance with 400 halfway through a series.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from base64 import b64encode
from dataclasses import dataclass
from pathlib import Path

import pytest

pydicom = pytest.importorskip("pydicom", reason="pydicom is needed to read the DICOM files (pip install pydicom)")
pytest.importorskip("dicomweb_client", reason="dicomweb-client is needed for STOW-RS (pip install dicomweb-client)")
pytest.importorskip("pynetdicom", reason="pynetdicom is needed for C-STORE (pip install pynetdicom)")

from medseg.cli import main  # noqa: E402
from medseg.pacs import Credentials, DicomWebTarget, DimseTarget, load_credentials, send  # noqa: E402

ORTHANC = Path("/usr/sbin/Orthanc")
PLUGINS = Path("/usr/share/orthanc/plugins")
DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "examples" / "totalsegmentator"
CT = DATA / "dicom_repaired"  # 20 CT slices with valid UIDs
CT_NO_UIDS = DATA / "dicom"  # the same slices with empty SOP/Study/Series UIDs
USER, PASSWORD = "medseg-test", "pw-Zq81-not-to-be-printed"

needs_ct = pytest.mark.skipif(not CT.is_dir(), reason=f"the shared CT series {CT} is absent")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class Orthanc:
    http_port: int
    dicom_port: int
    aet: str = "ORTHANC"

    @property
    def dicomweb(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/dicom-web"

    def get(self, path: str, method: str = "GET") -> object:
        request = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", method=method)
        request.add_header("Authorization", "Basic " + b64encode(f"{USER}:{PASSWORD}".encode()).decode())
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.loads(answer.read())

    def client(self) -> object:
        import requests
        from dicomweb_client.api import DICOMwebClient

        session = requests.Session()
        session.auth = (USER, PASSWORD)
        return DICOMwebClient(self.dicomweb, session=session)


@pytest.fixture(scope="module")
def orthanc_server() -> Orthanc:
    """An Orthanc on free 127.0.0.1 ports with a temporary store, stopped by its process id (it takes 3 s)."""
    if not ORTHANC.exists():
        pytest.skip(f"Orthanc is not installed ({ORTHANC}): apt-get install orthanc orthanc-dicomweb "
                    "(scripts/setup.sh does it when run as root)")
    if not any(PLUGINS.glob("libOrthancDicomWeb*")):
        pytest.skip(f"the Orthanc DICOMweb plugin is not installed in {PLUGINS}: apt-get install orthanc-dicomweb")
    root = Path(tempfile.mkdtemp(prefix="medseg-orthanc-"))  # not pytest's tmp_path: 'nobody' must reach it
    server = Orthanc(_free_port(), _free_port())
    config = {"Name": "medseg-test", "StorageDirectory": str(root / "db"), "IndexDirectory": str(root / "db"),
              "HttpPort": server.http_port, "DicomPort": server.dicom_port, "DicomAet": server.aet,
              "RemoteAccessAllowed": False, "AuthenticationEnabled": True, "RegisteredUsers": {USER: PASSWORD},
              "DicomCheckCalledAet": True, "DicomAlwaysAllowStore": True, "DicomAlwaysAllowEcho": True,
              "Plugins": [str(PLUGINS)], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}}
    (root / "orthanc.json").write_text(json.dumps(config))
    user = {}
    if os.geteuid() == 0:  # never run the server as root
        nobody = pwd.getpwnam("nobody")
        for p in [root, *root.rglob("*")]:
            os.chown(p, nobody.pw_uid, nobody.pw_gid)
        user = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}
    log = open(root / "orthanc.log", "wb")  # closed below
    process = subprocess.Popen([str(ORTHANC), str(root / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT,
                               cwd=root, **user)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                server.get("/system")
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"Orthanc did not start: {(root / 'orthanc.log').read_text(errors='replace')[-2000:]}")
                time.sleep(0.1)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        log.close()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def orthanc(orthanc_server: Orthanc) -> Orthanc:
    """The module's Orthanc, emptied."""
    for patient in orthanc_server.get("/patients"):
        orthanc_server.get(f"/patients/{patient}", method="DELETE")
    assert orthanc_server.get("/instances") == []
    return orthanc_server


def _local_instances(folder: Path) -> dict[str, object]:
    return {str(ds.SOPInstanceUID): ds for ds in (pydicom.dcmread(p) for p in sorted(folder.iterdir()))}


OK = Credentials(USER, PASSWORD)


@needs_ct
def test_stow_rs_round_trip_identical(orthanc: Orthanc) -> None:
    report = send([CT], DicomWebTarget(orthanc.dicomweb), timeout=10, retries=0, credentials=OK)
    local = _local_instances(CT)
    assert report.complete and len(report.sent) == 20 and {i.sop_instance_uid for i in report.sent} == set(local)
    client = orthanc.client()
    found = client.search_for_instances()
    assert {item["00080018"]["Value"][0] for item in found} == set(local)  # QIDO-RS
    for uid, ds in local.items():  # WADO-RS, in the stored transfer syntax
        back = client.retrieve_instance(ds.StudyInstanceUID, ds.SeriesInstanceUID, uid,
                                        media_types=(("application/dicom", "*"),))
        assert back.SOPClassUID == ds.SOPClassUID
        assert back.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID
        assert back.PixelData == ds.PixelData


@needs_ct
def test_seg_and_sr_of_a_result_round_trip_through_the_pacs(orthanc: Orthanc, tmp_path: Path) -> None:
    """MedSeg's own SEG and SR of the CT, sent with the CT: Orthanc files all three series under one study and gives
    back the SEG's pixel data and the SR's content unchanged."""
    pytest.importorskip("highdicom", reason="highdicom writes the SEG and SR (pip install highdicom)")
    import numpy as np
    from card_support import card_dict

    from medseg.card import ModelCard
    from medseg.dicom import build_measurement_report, build_segmentation, dataset_bytes
    from medseg.dicom.source import read_source
    from medseg.io import read_image
    from medseg.measure import measure_labels
    from medseg.models import build_model

    image, geometry = read_image(CT)
    labels = ((image > 150).astype(np.uint8) + (image > 600)).astype(np.uint8)  # contrast, bone: two labels
    card = ModelCard.from_dict({**card_dict(build_model("unet", spatial_dims=3, in_channels=1, num_classes=3,
                                                        width=0.0625, depth=3)), "orientation": "LPS"})
    source = read_source(CT)
    seg = build_segmentation(labels, geometry, source, card, checkpoint_sha256="0" * 64)
    sr = build_measurement_report(seg, measure_labels(labels, geometry, card.labels, image=image), source, card)
    for name, dataset in (("seg.dcm", seg), ("sr.dcm", sr)):
        (tmp_path / name).write_bytes(dataset_bytes(dataset))
    report = send([CT, tmp_path / "seg.dcm", tmp_path / "sr.dcm"], DicomWebTarget(orthanc.dicomweb), timeout=10,
                  retries=0, credentials=OK)
    assert report.complete and len(report.sent) == 22
    assert len(orthanc.get("/studies")) == 1 and len(orthanc.get("/series")) == 3
    client = orthanc.client()
    seg_back = client.retrieve_instance(seg.StudyInstanceUID, seg.SeriesInstanceUID, seg.SOPInstanceUID)
    sr_back = client.retrieve_instance(sr.StudyInstanceUID, sr.SeriesInstanceUID, sr.SOPInstanceUID)
    assert seg_back.PixelData == pydicom.dcmread(tmp_path / "seg.dcm").PixelData
    assert len(seg_back.SegmentSequence) == 2 and seg_back.SOPClassUID == seg.SOPClassUID
    assert sr_back.ContentSequence == pydicom.dcmread(tmp_path / "sr.dcm").ContentSequence


@needs_ct
def test_c_store_round_trip(orthanc: Orthanc) -> None:
    target = DimseTarget("127.0.0.1", orthanc.dicom_port, "MEDSEG", orthanc.aet)
    report = send([CT], target, timeout=10, retries=0)
    assert report.complete and len(report.sent) == 20
    stored = {orthanc.get(f"/instances/{i}/tags?simplify")["SOPInstanceUID"] for i in orthanc.get("/instances")}
    assert stored == set(_local_instances(CT))


@needs_ct
def test_wrong_called_aet_is_refused_without_retry(orthanc: Orthanc) -> None:
    target = DimseTarget("127.0.0.1", orthanc.dicom_port, "MEDSEG", "NOT-ORTHANC")
    start = time.monotonic()
    report = send([CT], target, timeout=10, retries=3, backoff=2)
    assert time.monotonic() - start < 2  # a refusal is not retried
    assert not report.complete and not report.sent and len(report.not_sent) == 19
    assert "rejected the association" in report.error and "--called-aet" in report.error
    assert orthanc.get("/instances") == []


@needs_ct
@pytest.mark.parametrize("transport", ["dicomweb", "dimse"])
def test_server_down_is_a_clear_error_fast(transport: str) -> None:
    port = _free_port()  # closed: nothing listens
    target = (DicomWebTarget(f"http://127.0.0.1:{port}/dicom-web") if transport == "dicomweb"
              else DimseTarget("127.0.0.1", port, "MEDSEG", "PACS"))
    start = time.monotonic()
    report = send([CT], target, timeout=5, retries=1, backoff=0.1, credentials=Credentials())
    assert time.monotonic() - start < 3
    assert not report.sent and report.failed is not None and len(report.not_sent) == 19
    assert ("cannot connect" in report.error or "cannot open a DICOM association" in report.error)
    assert "after 2 attempts" in report.error


@needs_ct
def test_series_without_uids_refused_before_sending(orthanc: Orthanc) -> None:
    if not CT_NO_UIDS.is_dir():
        pytest.skip(f"the shared series without UIDs {CT_NO_UIDS} is absent")
    first_bad = sorted(CT_NO_UIDS.iterdir())[0]
    with pytest.raises(ValueError, match="nothing was sent") as error:  # good files first: still nothing sent
        send([CT, CT_NO_UIDS], DicomWebTarget(orthanc.dicomweb), timeout=10, credentials=OK)
    assert str(first_bad) in str(error.value) and "SOPClassUID" in str(error.value)
    assert orthanc.get("/instances") == []


def test_not_dicom_and_missing_files_refused(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a DICOM file")
    with pytest.raises(ValueError, match=r"notes\.txt: not a DICOM file"):
        send([text], DicomWebTarget("http://127.0.0.1:9/dicom-web"), credentials=Credentials())
    with pytest.raises(FileNotFoundError, match="no such file"):
        send([tmp_path / "missing.dcm"], DimseTarget("127.0.0.1", 104, "A", "B"))


@needs_ct
def test_wrong_password_4xx_not_retried_nor_printed(orthanc: Orthanc, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str],
                                                     caplog: pytest.LogCaptureFixture) -> None:
    wrong = "wrong-" + PASSWORD
    monkeypatch.setenv("MEDSEG_PACS_USER", USER)
    monkeypatch.setenv("MEDSEG_PACS_PASSWORD", wrong)
    monkeypatch.setenv("MEDSEG_PACS_CONFIG", os.devnull + "-absent")  # no file: must be named, then unset
    assert main(["send", str(CT), "--dicomweb", orthanc.dicomweb]) == 2
    assert "MEDSEG_PACS_CONFIG" in capsys.readouterr().err
    monkeypatch.delenv("MEDSEG_PACS_CONFIG")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(Path(tempfile.gettempdir()) / "medseg-no-config"))
    caplog.set_level("DEBUG")
    start = time.monotonic()
    code = main(["-v", "send", str(CT), "--dicomweb", orthanc.dicomweb, "--retries", "3"])
    out, err = capsys.readouterr()
    assert code == 2 and time.monotonic() - start < 2  # 401 is not retried
    assert "HTTP 401" in err and "refused the credentials" in err and "sent 0 of 20" in err
    assert out.count("NOT sent:") == 19 and "FAILED:" in out
    for text in (out, err, caplog.text):
        assert wrong not in text and PASSWORD not in text
    assert orthanc.get("/instances") == []


@needs_ct
def test_credentials_from_config_and_env_never_printed(orthanc: Orthanc, monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                       caplog: pytest.LogCaptureFixture) -> None:
    config = tmp_path / "pacs.json"
    config.write_text(json.dumps({"username": USER, "password": "stale-password-from-file"}))
    config.chmod(0o600)
    monkeypatch.setenv("MEDSEG_PACS_CONFIG", str(config))
    monkeypatch.setenv("MEDSEG_PACS_PASSWORD", PASSWORD)  # the environment wins over the file
    monkeypatch.delenv("MEDSEG_PACS_USER", raising=False)
    monkeypatch.delenv("MEDSEG_PACS_TOKEN", raising=False)
    assert load_credentials() == Credentials(USER, PASSWORD)
    assert PASSWORD not in repr(load_credentials())
    caplog.set_level("DEBUG")
    report_json = tmp_path / "report.json"
    assert main(["-v", "send", str(CT), "--dicomweb", orthanc.dicomweb, "--json", str(report_json)]) == 0
    out, err = capsys.readouterr()
    assert "sent 20 instance(s) of 1 series" in out
    assert json.loads(report_json.read_text())["complete"] is True
    for text in (out, err, caplog.text, report_json.read_text()):
        assert PASSWORD not in text and "stale-password-from-file" not in text
    assert len(orthanc.get("/instances")) == 20


def test_credentials_rules(tmp_path: Path) -> None:
    config = tmp_path / "pacs.json"
    config.write_text(json.dumps({"user": "x", "password": "secret-value"}))
    with pytest.raises(ValueError, match="unknown key") as error:
        load_credentials({"MEDSEG_PACS_CONFIG": str(config)})
    assert "secret-value" not in str(error.value)
    with pytest.raises(ValueError, match="not both"):
        load_credentials({"MEDSEG_PACS_USER": "u", "MEDSEG_PACS_TOKEN": "t", "XDG_CONFIG_HOME": str(tmp_path)})
    with pytest.raises(ValueError, match="holds credentials"):
        DicomWebTarget("https://user:secret@pacs.example.org/dicom-web")
    with pytest.raises(ValueError, match="AE title"):
        DimseTarget("pacs", 104, "MEDSEG", "A-TITLE-LONGER-THAN-16")
    token = load_credentials({"MEDSEG_PACS_TOKEN": "tok", "XDG_CONFIG_HOME": str(tmp_path)})
    assert token.token == "tok" and "tok" not in repr(token)


class _StubStow(http.server.BaseHTTPRequestHandler):
    """A STOW-RS endpoint whose answer to the n-th request is ``server.plan[n]``: a status or ("sleep", s)."""

    def do_POST(self) -> None:  # http.server calls do_<METHOD>
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) if "chunked" not in \
            self.headers.get("Transfer-Encoding", "") else self._chunked()
        stub = self.server
        n = len(stub.requests)
        stub.requests.append(body)
        stub.authorizations.append(self.headers.get("Authorization"))
        step = stub.plan[n] if n < len(stub.plan) else 200
        if isinstance(step, tuple):
            time.sleep(step[1])
            step = 200
        uid = next((u for u in stub.uids if u.encode() in body), "")
        payload = json.dumps({"00081199": {"vr": "SQ", "Value": [{"00081155": {"vr": "UI", "Value": [uid]}}]}}
                             if step == 200 else {}).encode()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client may have given up waiting
            self.send_response(step)
            self.send_header("Content-Type", "application/dicom+json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    def _chunked(self) -> bytes:
        data = b""
        while size := int(self.rfile.readline().strip(), 16):
            data += self.rfile.read(size)
            self.rfile.readline()
        self.rfile.readline()
        return data

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def stub() -> http.server.ThreadingHTTPServer:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _StubStow)
    server.daemon_threads = True
    server.requests, server.plan, server.authorizations = [], [], []
    server.uids = [str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in sorted(CT.iterdir())] \
        if CT.is_dir() else []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _url(server: http.server.ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/dicom-web"


@needs_ct
def test_slow_server_times_out_after_bounded_retries(stub: http.server.ThreadingHTTPServer) -> None:
    stub.plan = [("sleep", 3), ("sleep", 3)]
    start = time.monotonic()
    report = send([CT], DicomWebTarget(_url(stub)), timeout=0.5, retries=1, backoff=0.1, credentials=Credentials())
    assert time.monotonic() - start < 2.5
    assert len(stub.requests) == 2 and not report.sent and len(report.not_sent) == 19
    assert "no answer" in report.error and "within 0.5 s" in report.error and "after 2 attempts" in report.error


@needs_ct
def test_5xx_retried_4xx_not_and_report_exact(stub: http.server.ThreadingHTTPServer,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    stub.plan = [503, 200, 200, 400]  # the first instance once refused with 503, the third with 400
    files = sorted(CT.iterdir())
    code = main(["send", str(CT), "--dicomweb", _url(stub), "--retries", "2", "--timeout", "5"])
    out, err = capsys.readouterr()
    assert code == 2 and len(stub.requests) == 4  # 503 retried once, 400 never
    assert f"sent:     {files[0]}" in out and f"sent:     {files[1]}" in out
    assert f"FAILED:   {files[2]}" in out and "HTTP 400" in out
    assert all(f"NOT sent: {f}" in out for f in files[3:]) and out.count("NOT sent:") == 17
    assert "sent 2 of 20 instance(s)" in err and "18 NOT sent" in err


@needs_ct
def test_unconfirmed_instance_is_not_counted_as_sent(stub: http.server.ThreadingHTTPServer) -> None:
    stub.uids = []  # 200 with an empty ReferencedSOPSequence, as Orthanc answers for an instance it could not store
    report = send([CT], DicomWebTarget(_url(stub)), timeout=5, retries=2, credentials=Credentials())
    assert not report.sent and "without confirming" in report.error and len(stub.requests) == 1


@needs_ct
def test_https_verifies_certificates_and_takes_a_ca_bundle(stub: http.server.ThreadingHTTPServer,
                                                           tmp_path: Path) -> None:
    import ssl

    if not shutil.which("openssl"):
        pytest.skip("the openssl command is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    stub.socket = context.wrap_socket(stub.socket, server_side=True)
    url = _url(stub).replace("http://", "https://")
    start = time.monotonic()
    report = send([CT], DicomWebTarget(url), timeout=5, retries=2, backoff=1, credentials=Credentials())
    assert time.monotonic() - start < 1 and not report.sent and not stub.requests  # refused, not retried
    assert "TLS certificate" in report.error and "--ca-bundle" in report.error
    report = send([CT], DicomWebTarget(url, ca_bundle=str(cert)), timeout=5, retries=0, credentials=Credentials())
    assert report.complete and len(report.sent) == 20 and len(stub.requests) == 20


@needs_ct
def test_bearer_token_sent_and_never_in_the_report(stub: http.server.ThreadingHTTPServer) -> None:
    stub.plan = [200, 400]
    report = send([CT], DicomWebTarget(_url(stub)), timeout=5, retries=0, credentials=Credentials(token="tok-Q7x"))
    assert stub.authorizations == ["Bearer tok-Q7x"] * 2 and len(report.sent) == 1
    assert "tok-Q7x" not in "\n".join(report.lines()) and "tok-Q7x" not in repr(report)
