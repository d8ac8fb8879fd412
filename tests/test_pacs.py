"""A PACS over DICOMweb: a real Orthanc for the round trip and the fault test, small fake servers for bad answers."""

from __future__ import annotations

import csv
import json
import shutil
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pydicom
import pytest
from dicom_support.fixtures import CachedSegmenter, require
from dicom_support.orthanc import OrthancServer, orthanc_installed
from medseg_threshold_plugin import FixedThreshold

import medseg
from medseg.batch import run_batch
from medseg.cli import main
from medseg.errors import PacsError
from medseg.io.image import Image
from medseg.pacs import DicomwebPacs, store_files

pytestmark = pytest.mark.xdist_group("dicom_pacs")
PATIENT = "Test^Patient"


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    """Orthanc with DICOMweb on a free loopback port, storage in a temporary folder, stopped by PID at the end."""
    require(orthanc_installed(), "Orthanc with its DICOMweb plugin (and cc for the loopback shim)",
            "apt-get install orthanc orthanc-dicomweb gcc")
    server = OrthancServer(tmp_path_factory.mktemp("orthanc"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def dicomweb(server: OrthancServer, **filters: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in filters.items())
    return f"dicomweb://127.0.0.1:{server.port}/dicom-web" + (f"?{query}" if query else "")


def seg_uids(pacs: DicomwebPacs, study: str) -> list[str]:
    """SOP Instance UIDs of the SEGs the server holds in ``study``."""
    return sorted(uid for record in pacs.find_series({"StudyInstanceUID": study, "Modality": "SEG"})
                  for uid in pacs.instance_uids(record.study_uid, record.series_uid))


def test_the_test_pacs_listens_on_loopback_only(orthanc: OrthancServer) -> None:
    assert orthanc.listening_addresses() == {"0100007F"}  # 127.0.0.1, nothing on 0.0.0.0 or ::


def test_round_trip_store_segment_store_back_is_idempotent(orthanc: OrthancServer, ct_folder: Path,
                                                           ct_model: CachedSegmenter, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["pacs", "store", orthanc.url, str(ct_folder)])
    assert done.value.code in (None, 0)
    assert "stored 20 instances of 1 series (1 with repaired UIDs)" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["pacs", "find", orthanc.url, "--modality", "CT", "--json"])
    (series,) = json.loads(capsys.readouterr().out)
    assert series["n_instances"] == 20 and series["description"] == "CT Body 3.0"

    address = dicomweb(orthanc, StudyInstanceUID=series["study_uid"])
    remote = run_batch(ct_model, address, tmp_path / "remote", store=True)
    assert remote.exit_code == 0 and remote.stored == remote.done and len(remote.done) == 1
    assert not (tmp_path / "remote" / ".dicomweb").exists() or not any((tmp_path / "remote" / ".dicomweb").iterdir())
    pacs = DicomwebPacs(orthanc.url)
    (seg_uid,) = seg_uids(pacs, series["study_uid"])
    (seg_series,) = pacs.find_series({"StudyInstanceUID": series["study_uid"], "Modality": "SEG"})
    fetched = tmp_path / "fetched.dcm"
    pydicom.dcmwrite(fetched, pacs.retrieve_instance(series["study_uid"], seg_series.series_uid, seg_uid))

    local_input = tmp_path / "local_input"
    shutil.copytree(ct_folder, local_input / "ct")
    local = run_batch(ct_model, local_input, tmp_path / "local", output_format="seg")
    assert local.exit_code == 0
    (local_case,) = (tmp_path / "local" / "cases").iterdir()
    from_pacs = medseg.load(fetched, reference=ct_folder)
    from_local = medseg.load(local_case / "labels.dcm", reference=ct_folder)
    assert np.array_equal(from_pacs.array, from_local.array) and from_pacs.label_names == from_local.label_names
    assert pydicom.dcmread(local_case / "labels.dcm", stop_before_pixels=True).SOPInstanceUID == seg_uid
    stored_seg = pydicom.dcmread(fetched, stop_before_pixels=True)  # its references resolve on the PACS
    assert stored_seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series["series_uid"]
    assert {r.ReferencedSOPInstanceUID for r in stored_seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence} \
        == set(pacs.instance_uids(series["study_uid"], series["series_uid"]))
    assert ct_model.calls == 1  # one inference served every run (see dicom_support.fixtures)

    instances = orthanc.count("instances")
    again = run_batch(ct_model, address, tmp_path / "remote", store=True)
    assert again.up_to_date == remote.done and again.stored == [] and orthanc.count("instances") == instances
    assert json.loads((tmp_path / "remote" / "summary.json").read_text())["n_stored_this_run"] == 0


class StopsThePacs(FixedThreshold):
    """A threshold segmenter that stops the PACS while it segments its ``when``-th image (a PACS going down)."""

    def __init__(self, server: OrthancServer, when: int) -> None:
        super().__init__(0.0)
        self.server, self.when, self.calls = server, when, 0

    def segment(self, image: Image) -> Any:
        self.calls += 1
        if self.calls == self.when:
            self.server.stop()
        return super().segment(image)


def _synthetic_study(folder: Path) -> list[Path]:
    """Two small CT series of one study, of a named patient."""
    paths = []
    for n in range(2):
        array = np.zeros((32, 32, 3), np.int16)
        array[8 + n : 20 + n, 8:20, :] = 100
        out = folder / f"series{n}"
        medseg.save_dicom_series(Image(array, spacing=(1.0, 1.0, 2.0), modality="CT"), out, seed=f"fault-{n}",
                                 study_uid="1.2.826.0.1.3680043.8.498.1001", series_number=n + 1)
        for f in out.iterdir():
            ds = pydicom.dcmread(f)
            ds.PatientName, ds.PatientID = PATIENT, "ID-4711"
            ds.save_as(f, enforce_file_format=True)
        paths.append(out)
    return paths


def test_a_pacs_going_down_fails_the_affected_cases_only(orthanc: OrthancServer, tmp_path: Path) -> None:
    pacs = DicomwebPacs(orthanc.url, timeout_s=10)
    assert store_files(pacs, _synthetic_study(tmp_path / "study")).stored == 6
    study = "1.2.826.0.1.3680043.8.498.1001"
    address = dicomweb(orthanc, StudyInstanceUID=study)
    out = tmp_path / "out"
    segmenter = StopsThePacs(orthanc, when=2)
    try:
        first = run_batch(segmenter, address, out, store=True, pacs_timeout_s=5)
    finally:
        orthanc.start()
    assert len(first.done) == 1 and first.stored == first.done and first.exit_code == 3
    with open(out / "failures.csv", newline="") as fh:
        (failure,) = list(csv.DictReader(fh))
    assert failure["stage"] == "store" and failure["error_type"] == "PacsError"
    assert failure["source"].startswith(f"studies/{study}/series/") and "cannot connect" in failure["message"]
    assert len(seg_uids(pacs, study)) == 1  # nothing of the failed case reached the PACS

    second = run_batch(segmenter, address, out, store=True, pacs_timeout_s=5)
    assert second.exit_code == 0 and second.up_to_date == first.done and len(second.stored) == 1
    stored = seg_uids(pacs, study)
    assert len(stored) == 2
    forced = run_batch(segmenter, address, out, store=True, force=True, pacs_timeout_s=5)  # same SEG UIDs again
    assert len(forced.done) == 2 and forced.stored == [] and seg_uids(pacs, study) == stored
    assert (out / "failures.csv").read_text().splitlines() == ["case_id,source,error_type,stage,message"]
    # identity stays where DICOM needs it: in the SEG's patient module, not in names, logs or tables
    record = next(r for r in pacs.find_series({"StudyInstanceUID": study, "Modality": "SEG"}))
    uid = pacs.instance_uids(record.study_uid, record.series_uid)[0]
    assert str(pacs.retrieve_instance(record.study_uid, record.series_uid, uid).PatientName) == PATIENT
    for path in out.rglob("*"):
        assert PATIENT.split("^")[0] not in path.name
        if path.is_file() and path.suffix != ".dcm":
            assert b"Test" not in path.read_bytes() and b"4711" not in path.read_bytes(), path


# ---- servers that answer badly -------------------------------------------------------------------------------------


class FakeServer:
    """A loopback HTTP server answering each (method, path prefix) with a canned (status, body), or never."""

    def __init__(self, answers: dict[tuple[str, str], tuple[int, Any] | None]) -> None:
        self.answers, self.release = answers, threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                key = next((k for k in outer.answers if k[0] == self.command and self.path.startswith(k[1])), None)
                if key is None or outer.answers[key] is None:  # no answer at all
                    outer.release.wait(30)
                    return
                status, body = outer.answers[key]
                offset = parse_qs(urlsplit(self.path).query).get("offset", ["0"])[0]
                if isinstance(body, list) and int(offset) > 0:  # QIDO paging: one page holds everything
                    body = []
                payload = json.dumps(body).encode() if not isinstance(body, bytes) else body
                self.send_response(status)
                self.send_header("Content-Type", "application/dicom+json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/dicom-web"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fake() -> Iterator[Any]:
    servers: list[FakeServer] = []

    def make(answers: dict[tuple[str, str], tuple[int, Any] | None]) -> FakeServer:
        servers.append(FakeServer(answers))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def _series_json(study: str, series: str) -> list[dict[str, Any]]:
    return [{"0020000D": {"vr": "UI", "Value": [study]}, "0020000E": {"vr": "UI", "Value": [series]},
             "00080060": {"vr": "CS", "Value": ["CT"]}}]


def test_error_answers_and_silence_are_clear_errors(fake: Any, tmp_path: Path) -> None:
    broken = fake({("GET", "/dicom-web/series"): (500, b"<html>boom</html>")})
    with pytest.raises(PacsError, match=r"127\.0\.0\.1:\d+/dicom-web: QIDO-RS series search: HTTP 500"):
        DicomwebPacs(broken.url, retries=0).find_series({"Modality": "CT"})
    silent = fake({})
    t0 = time.monotonic()
    with pytest.raises(PacsError, match=r"QIDO-RS series search: no answer within 0\.5 s$"):
        DicomwebPacs(silent.url, timeout_s=0.5, retries=0).find_series()
    assert time.monotonic() - t0 < 5
    with pytest.raises(PacsError, match=r"no answer within 0\.5 s \(3 attempts\)"):  # a batch cannot list its cases
        run_batch(FixedThreshold(0.0), silent.url.replace("http://", "dicomweb://"), tmp_path / "out",
                  pacs_timeout_s=0.5)


def test_a_refused_store_names_the_instance_and_the_reason(fake: Any) -> None:
    failed = {"00081198": {"vr": "SQ", "Value": [{"00081155": {"vr": "UI", "Value": ["1.2.3.4"]},
                                                  "00081197": {"vr": "US", "Value": [0xA900]}}]}}
    ds = pydicom.Dataset()
    ds.SOPInstanceUID, ds.SOPClassUID, ds.StudyInstanceUID = "1.2.3.4", "1.2.840.10008.5.1.4.1.1.66.4", "1.2.3"
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    for status in (200, 409):
        server = fake({("POST", "/dicom-web/studies"): (status, failed)})
        with pytest.raises(PacsError, match=r"1\.2\.3\.4 \(data set does not match its SOP class\)"):
            DicomwebPacs(server.url, retries=0).store([ds])
    unconfirmed = fake({("POST", "/dicom-web/studies"): (200, {})})
    with pytest.raises(PacsError, match=r"1\.2\.3\.4 \(not confirmed\)"):
        DicomwebPacs(unconfirmed.url, retries=0).store([ds])


def test_a_series_the_pacs_cannot_deliver_is_a_failures_row(fake: Any, tmp_path: Path) -> None:
    study, series = "1.2.3", "1.2.3.4"
    server = fake({("GET", f"/dicom-web/studies/{study}/series/{series}/instances"): (200, [
                       {"00080018": {"vr": "UI", "Value": ["1.2.3.4.5"]}}]),
                   ("GET", "/dicom-web/series"): (200, _series_json(study, series)),
                   ("GET", f"/dicom-web/studies/{study}/series/{series}"): (503, b"busy")})
    result = run_batch(FixedThreshold(0.0), server.url.replace("http://", "dicomweb://"), tmp_path / "out",
                       pacs_timeout_s=2)
    assert result.exit_code == 3
    (row,) = result.failures
    assert row["source"] == f"studies/{study}/series/{series}" and row["stage"] == "read"
    assert "WADO-RS series retrieval: HTTP 503 Service Unavailable (after 3 attempts)" in row["message"]
