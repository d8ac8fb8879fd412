"""``medseg measure``: volumes, shapes and intensity statistics of existing label maps."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from medseg.errors import ConfigError, ReadError, WriteError

if TYPE_CHECKING:
    import pandas as pd

TABLE_SUFFIXES = (".csv", ".json", ".parquet")


def read_label_names(path: Path) -> dict[int, str]:
    """Read ``{"1": "spleen", "5": "liver", ...}`` (label value -> name) from a JSON file."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise ReadError(f"cannot read label names ({exc})", path) from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"label names are not valid JSON ({exc})", path) from exc
    if not isinstance(raw, dict):
        raise ConfigError('label names must be a JSON object such as {"1": "spleen"}', path)
    try:
        return {int(k): str(v) for k, v in raw.items()}
    except ValueError as exc:
        raise ConfigError(f"label names must be keyed by integer label values ({exc})", path) from exc


def write_table(table: pd.DataFrame, path: Path) -> Path:
    """Write a DataFrame as CSV, JSON (a list of records) or Parquet, chosen by suffix, atomically."""
    from medseg.atomic import atomic_path

    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise WriteError(f"unknown table format {suffix!r}; use one of {', '.join(TABLE_SUFFIXES)}", path)
    try:
        with atomic_path(path) as tmp:
            if suffix == ".csv":
                table.to_csv(tmp, index=False)
            elif suffix == ".json":
                table.to_json(tmp, orient="records", indent=1)
            else:
                table.to_parquet(tmp, index=False)
    except OSError as exc:
        raise WriteError(f"cannot write the table ({exc})", path) from exc
    return path


def _label_files(folder: Path) -> list[Path]:
    from medseg.io import RASTER_SUFFIXES, VOLUME_SUFFIXES

    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.name.lower().endswith(VOLUME_SUFFIXES + RASTER_SUFFIXES)
    )


def _stem(path: Path) -> str:
    """File name without its format suffix (``case01.nii.gz`` -> ``case01``)."""
    return path.name[:-7] if path.name.lower().endswith(".nii.gz") else path.stem


def _matching_image(label_file: Path, image_folder: Path) -> Path:
    """The image for ``label_file`` in ``image_folder``: same name, or the nnU-Net ``<case>_0000`` name."""
    stem = _stem(label_file)
    for candidate in sorted(image_folder.iterdir()):
        if _stem(candidate) in (stem, f"{stem}_0000"):
            return candidate
    raise ReadError(f"no image named {stem}.* or {stem}_0000.* for label map {label_file.name}", image_folder)


def register(app: typer.Typer) -> None:
    """Add ``medseg measure`` to ``app``."""

    @app.command("measure")
    def measure_command(
        labels: Annotated[Path, typer.Argument(help="Label map file, or a folder of label map files.", exists=True)],
        out: Annotated[Path, typer.Option("--out", "-o", help="Output table: .csv, .json or .parquet.")],
        image: Annotated[
            Path | None,
            typer.Option(
                "--image",
                "-i",
                help="Scan for intensity statistics (file or DICOM folder; a folder of images for a folder of label maps).",
            ),
        ] = None,
        names: Annotated[
            Path | None, typer.Option("--labels", help='JSON file {"1": "spleen", ...} naming the label values.')
        ] = None,
        instances: Annotated[bool, typer.Option("--instances", help="Also one row per connected object.")] = False,
        shape: Annotated[
            bool, typer.Option("--shape/--no-shape", help="Compute shape features (surface, diameters, ...).")
        ] = True,
        connectivity: Annotated[
            int | None, typer.Option(help="4/8 (2D) or 6/18/26 (3D) for --instances; full by default.")
        ] = None,
    ) -> None:
        """Measure label maps: one row per label (and per object) with volumes, shape and intensity statistics."""
        import pandas as pd

        from medseg.io import load
        from medseg.measurement import measure

        if out.suffix.lower() not in TABLE_SUFFIXES:
            raise WriteError(f"unknown table format {out.suffix!r}; use one of {', '.join(TABLE_SUFFIXES)}", out)
        label_names = read_label_names(names) if names else None
        if labels.is_dir():
            files = _label_files(labels)
            if not files:
                raise ReadError("no label map files (NIfTI, NRRD, MHA, PNG, TIFF) in this folder", labels)
            if image is not None and not image.is_dir():
                raise ReadError("with a folder of label maps, --image must be a folder of images", image)
            pairs = [(f, _matching_image(f, image) if image else None) for f in files]
        else:
            pairs = [(labels, image)]
        tables = []
        for label_file, image_file in pairs:
            scan = load(image_file) if image_file else None
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                table = measure(
                    load(label_file),
                    scan,
                    label_names=label_names,
                    instances=instances,
                    shape=shape,
                    connectivity=connectivity,
                )
            for warning in caught:
                typer.echo(f"warning: {warning.message}", err=True)
            if labels.is_dir():
                table.insert(0, "file", label_file.name)
            tables.append(table)
        result = pd.concat(tables, ignore_index=True) if len(tables) > 1 else tables[0]
        write_table(result, out)
        typer.echo(f"{len(result)} rows from {len(pairs)} label map(s) -> {out}")
