"""``medseg pacs find`` and ``medseg pacs store``: search a DICOMweb PACS, upload series to it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

pacs_app = typer.Typer(help="A PACS over DICOMweb: search series (QIDO-RS), upload series (STOW-RS).",
                       no_args_is_help=True)

URL_HELP = "DICOMweb server: http(s)://HOST[:PORT]/PATH or dicomweb://HOST[:PORT]/PATH?KEY=VALUE..."


@pacs_app.command("find")
def find(
    url: Annotated[str, typer.Argument(metavar="URL", help=URL_HELP)],
    modality: Annotated[str | None, typer.Option("--modality", help="Modality, e.g. CT, MR, SEG.")] = None,
    study: Annotated[str | None, typer.Option("--study", help="StudyInstanceUID.")] = None,
    date: Annotated[str | None, typer.Option("--date", help="StudyDate, YYYYMMDD or a range YYYYMMDD-YYYYMMDD.")] = None,
    filters: Annotated[list[str] | None, typer.Option("--filter", help="Any QIDO-RS series attribute, "
                                                                         "KEY=VALUE (repeatable).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", min=0.1, help="Seconds to wait for the server.")] = 30.0,
) -> None:
    """List the series a DICOMweb server holds that match the filters (no patient attributes are shown)."""
    from medseg.errors import ConfigError
    from medseg.pacs import DicomwebPacs, DicomwebQuery

    query = DicomwebQuery.parse(url)
    wanted = dict(query.filters)
    for item in filters or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--filter takes KEY=VALUE, got {item!r}")
        wanted[key] = value
    wanted.update({k: v for k, v in (("Modality", modality), ("StudyInstanceUID", study), ("StudyDate", date)) if v})
    records = DicomwebPacs(query.url, timeout_s=timeout).find_series(wanted)
    if as_json:
        typer.echo(json.dumps([r.to_dict() for r in records], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{len(records)} series on {query.display}", title_justify="left")
    for column in ("Study UID", "Series UID", "Modality", "Number", "Description", "Instances", "Study date"):
        table.add_column(column, overflow="fold")
    for r in records:
        table.add_row(r.study_uid, r.series_uid, r.modality, r.series_number, r.description, str(r.n_instances),
                      r.study_date)
    Console(width=200).print(table)


@pacs_app.command("store")
def store(
    url: Annotated[str, typer.Argument(metavar="URL", help=URL_HELP)],
    paths: Annotated[list[Path], typer.Argument(metavar="PATH...", help="DICOM series folders or files.")],
    timeout: Annotated[float, typer.Option("--timeout", min=0.1, help="Seconds to wait for the server.")] = 30.0,
) -> None:
    """Upload DICOM image series; UIDs an anonymiser blanked are replaced by deterministic ones (medseg's)."""
    from medseg.pacs import DicomwebPacs, DicomwebQuery, store_files

    query = DicomwebQuery.parse(url)
    report = store_files(DicomwebPacs(query.url, timeout_s=timeout), paths)
    typer.echo(f"stored {report.stored} instances of {report.series} series "
               f"({report.repaired_series} with repaired UIDs) on {query.display}")


def register(app: typer.Typer) -> None:
    """Add the ``pacs`` command group to the ``medseg`` app."""
    app.add_typer(pacs_app, name="pacs")
