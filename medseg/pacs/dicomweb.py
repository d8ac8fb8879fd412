"""A PACS over DICOMweb: search (QIDO-RS), retrieve (WADO-RS) and store (STOW-RS), through dicomweb-client.

Every failure becomes a :class:`~medseg.errors.PacsError` naming the server
(credentials removed) and the reason: an HTTP error status, no answer within
the timeout, a refused connection, or the instances a store did not accept
(the per-instance Failed SOP Sequence of the STOW-RS response is checked, and
every instance sent must be confirmed in its Referenced SOP Sequence).

Patient identity stays inside the DICOM objects: nothing here logs or
returns names or IDs, and retrieved instances are written under index names.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import pydicom
from pydicom.dataset import Dataset

from medseg.errors import MedsegError, PacsError

SCHEMES = {"dicomweb": "http", "dicomwebs": "https", "http": "http", "https": "https"}
# STOW-RS failure reasons (PS3.18 Table 10.5.3-1 / PS3.4 Annex GG)
_FAILURE_REASONS = {0x0110: "processing failure", 0x0122: "SOP class not supported", 0x0124: "not authorised",
                    0xA700: "out of resources", 0xA900: "data set does not match its SOP class",
                    0xC000: "cannot understand", 0xC122: "referenced transfer syntax not supported"}
_AS_STORED = (("application/dicom", "*"),)  # WADO-RS: any transfer syntax, so the server never has to transcode
T = TypeVar("T")


def is_dicomweb(text: str | os.PathLike[str]) -> bool:
    """True for a ``dicomweb://`` or ``dicomwebs://`` address."""
    return str(text).split("://", 1)[0].lower() in ("dicomweb", "dicomwebs") and "://" in str(text)


@dataclass(frozen=True)
class DicomwebQuery:
    """A DICOMweb server and the QIDO-RS filters of the series wanted.

    ``dicomweb://HOST[:PORT]/PATH?KEY=VALUE&...`` (``dicomwebs://`` for HTTPS, or
    plain ``http(s)://``): ``url`` is ``http(s)://HOST[:PORT]/PATH``, ``filters``
    the query keys (``StudyInstanceUID``, ``Modality``, any QIDO series attribute).
    """

    url: str
    filters: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, text: str) -> DicomwebQuery:
        """Split an address into server URL and filters.

        Raises
        ------
        medseg.errors.PacsError
            For another scheme or no host.
        """
        parts = urlsplit(str(text))
        scheme = SCHEMES.get(parts.scheme.lower())
        if scheme is None or not parts.netloc:
            raise PacsError(f"not a DICOMweb address (dicomweb://HOST/PATH?StudyInstanceUID=...): {redact(str(text))}")
        url = urlunsplit((scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
        return cls(url, tuple(parse_qsl(parts.query)))

    @property
    def display(self) -> str:
        """The address without credentials, for messages and tables."""
        query = "&".join(f"{k}={v}" for k, v in self.filters)
        return redact(self.url) + (f"?{query}" if query else "")


def redact(url: str) -> str:
    """``url`` without a ``user:password@`` part."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit((parts.scheme, parts.netloc.rsplit("@", 1)[1], parts.path, parts.query, parts.fragment))


@dataclass(frozen=True)
class SeriesRecord:
    """One series a QIDO-RS search found (no patient attributes)."""

    study_uid: str
    series_uid: str
    modality: str
    description: str
    series_number: str
    n_instances: int
    study_date: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


def _text(ds: Dataset, keyword: str) -> str:
    return str(ds.get(keyword, "") or "")


class DicomwebPacs:
    """One DICOMweb server.

    Parameters
    ----------
    url : str
        Base URL (``http://HOST:PORT/dicom-web``) or a ``dicomweb://`` address.
    timeout_s : float
        Seconds to wait for the server to connect and for each answer.
    retries : int
        Extra attempts, after waits of 0.5, 1, 2 ... s, when the server does not answer, cannot be
        reached or answers busy (HTTP 408, 429, 503, 504).
    """

    def __init__(self, url: str, *, timeout_s: float = 30.0, retries: int = 2) -> None:
        from dicomweb_client.api import DICOMwebClient

        self.url = DicomwebQuery.parse(url).url
        self.timeout_s, self.attempts = timeout_s, retries + 1
        self._client = DICOMwebClient(self.url, timeout=timeout_s)
        self._client.set_http_retry_params(retry=retries > 0, max_attempts=self.attempts, wait_exponential_multiplier=250)

    def _call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call the client; turn every failure into a PacsError naming the server and ``what`` was asked."""
        import requests
        import retrying

        where = redact(self.url)
        try:
            return fn(*args, **kwargs)
        except retrying.RetryError as exc:  # still busy after the retries: the last answer says why
            attempt = exc.last_attempt
            response = attempt.value if not attempt.has_exception else None
            status = f"HTTP {response.status_code} {response.reason}" if response is not None else "no answer"
            raise PacsError(f"{what}: {status} (after {attempt.attempt_number} attempts)", where) from exc
        except requests.Timeout as exc:
            raise PacsError(f"{what}: no answer within {self.timeout_s:g} s{self._tries}", where) from exc
        except requests.ConnectionError as exc:
            raise PacsError(f"{what}: cannot connect ({_reason(exc)}){self._tries}", where) from exc
        except requests.HTTPError as exc:
            response = exc.response
            status = f"HTTP {response.status_code} {response.reason}" if response is not None else "HTTP error"
            detail = _failed_instances(response) if response is not None else ""
            raise PacsError(f"{what}: {status}{detail}", where) from exc
        except MedsegError:
            raise
        except Exception as exc:  # malformed answers: JSON, multipart, DICOM parsing
            raise PacsError(f"{what}: malformed answer ({_reason(exc)})", where) from exc

    @property
    def _tries(self) -> str:
        return f" ({self.attempts} attempts)" if self.attempts > 1 else ""

    # ---- QIDO-RS -------------------------------------------------------------------------------------------------
    def find_series(self, filters: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> list[SeriesRecord]:
        """Series matching QIDO-RS ``filters`` (``StudyInstanceUID``, ``Modality``, ``StudyDate`` ...)."""
        query = dict(filters.items() if isinstance(filters, Mapping) else filters)
        study = query.pop("StudyInstanceUID", None)
        fields = ["SeriesDescription", "SeriesNumber", "NumberOfSeriesRelatedInstances", "StudyDate"]
        found = self._call("QIDO-RS series search", self._client.search_for_series, study_instance_uid=study,
                           search_filters=query or None, fields=fields, get_remaining=True)
        records = []
        for item in found:
            ds = Dataset.from_json(item)
            records.append(SeriesRecord(
                _text(ds, "StudyInstanceUID") or (study or ""), _text(ds, "SeriesInstanceUID"), _text(ds, "Modality"),
                _text(ds, "SeriesDescription"), _text(ds, "SeriesNumber"),
                int(ds.get("NumberOfSeriesRelatedInstances", 0) or 0), _text(ds, "StudyDate"),
            ))
        return sorted(records, key=lambda r: (r.study_uid, r.series_number, r.series_uid))

    def instance_uids(self, study: str, series: str) -> list[str]:
        """SOP Instance UIDs of a series, sorted."""
        found = self._call("QIDO-RS instance search", self._client.search_for_instances, study_instance_uid=study,
                           series_instance_uid=series, fields=["SOPInstanceUID"], get_remaining=True)
        return sorted(_text(Dataset.from_json(item), "SOPInstanceUID") for item in found)

    def has_instance(self, study: str, series: str, sop_uid: str) -> bool:
        """Whether the server holds the instance ``sop_uid``."""
        found = self._call("QIDO-RS instance search", self._client.search_for_instances, study_instance_uid=study,
                           series_instance_uid=series, search_filters={"SOPInstanceUID": sop_uid})
        return bool(found)

    # ---- WADO-RS -------------------------------------------------------------------------------------------------
    def retrieve_series(self, study: str, series: str, folder: Path) -> list[Path]:
        """Write every instance of a series into ``folder`` as ``00001.dcm``, ``00002.dcm`` ... (WADO-RS)."""
        folder.mkdir(parents=True, exist_ok=True)

        def fetch() -> list[Path]:
            paths = []
            for n, ds in enumerate(self._client.iter_series(study, series, media_types=_AS_STORED), 1):
                target = folder / f"{n:05d}.dcm"
                pydicom.dcmwrite(target, ds, enforce_file_format=True)
                paths.append(target)
            return paths

        paths = self._call("WADO-RS series retrieval", fetch)
        if not paths:
            raise PacsError(f"WADO-RS series retrieval: the server returned no instances of series {series}",
                            redact(self.url))
        return paths

    def retrieve_instance(self, study: str, series: str, sop_uid: str) -> Dataset:
        """One instance (WADO-RS)."""
        return self._call("WADO-RS instance retrieval", self._client.retrieve_instance, study, series, sop_uid,
                          media_types=_AS_STORED)

    # ---- STOW-RS -------------------------------------------------------------------------------------------------
    def store(self, datasets: Sequence[Dataset]) -> list[str]:
        """Store ``datasets`` (STOW-RS); returns their SOP Instance UIDs once the server confirmed every one.

        Raises
        ------
        medseg.errors.PacsError
            Naming each instance the server refused (with its failure reason) or did not confirm.
        """
        if not datasets:
            return []
        sent = [str(ds.SOPInstanceUID) for ds in datasets]
        answer = self._call("STOW-RS store", self._client.store_instances, list(datasets))
        failed = [(str(i.get("ReferencedSOPInstanceUID", "")), int(i.get("FailureReason", 0) or 0))
                  for i in answer.get("FailedSOPSequence") or []]
        confirmed = {str(i.get("ReferencedSOPInstanceUID", "")) for i in answer.get("ReferencedSOPSequence") or []}
        missing = [uid for uid in sent if uid not in confirmed and uid not in {f for f, _ in failed}]
        if failed or missing:
            problems = [f"{uid} ({_FAILURE_REASONS.get(code, f'failure 0x{code:04X}')})" for uid, code in failed]
            problems += [f"{uid} (not confirmed)" for uid in missing]
            raise PacsError(f"STOW-RS store: {len(problems)} of {len(sent)} instances not stored: "
                            + "; ".join(problems[:5]), redact(self.url))
        return sent


def _reason(exc: BaseException) -> str:
    from medseg.io.guard import one_line

    text = one_line(exc, limit=4000)
    for marker in ("Connection refused", "Name or service not known", "timed out", "Connection reset",
                   "Connection aborted", "Remote end closed connection"):
        if marker in text:
            return marker.lower()
    return text if len(text) <= 160 else text[:157] + "..."


def _failed_instances(response: Any) -> str:
    """``: N instances refused (UID reason; ...)`` from an error response's Failed SOP Sequence, else ``""``."""
    try:
        answer = Dataset.from_json(response.json())
    except Exception:  # noqa: BLE001 - error bodies are often HTML or empty: the status says enough then
        return ""
    failed = answer.get("FailedSOPSequence") or []
    if not failed:
        return ""
    items = [f"{i.get('ReferencedSOPInstanceUID', '?')} "
             f"({_FAILURE_REASONS.get(int(i.get('FailureReason', 0) or 0), 'failure')})" for i in failed]
    return f": {len(items)} instances refused ({'; '.join(items[:5])})"


__all__ = ["DicomwebPacs", "DicomwebQuery", "SeriesRecord", "is_dicomweb", "redact"]
