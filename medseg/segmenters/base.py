"""The :class:`Segmenter` protocol and the registry that turns a spec into one.

A Segmenter is anything that labels an image on the image's own grid: a medseg
model directory, a MONAI bundle, a classical method (``classical:NAME``, see
:mod:`medseg.classical`), a third-party model. A promptable model (box or
point prompts) also has the methods of :class:`Promptable`. The
CLI (``segment``, ``batch``, ``evaluate --baseline``), the batch runner and the
demo accept any of them::

    import medseg
    seg = medseg.load_segmenter("sample_data/models/ct_organs")   # or "mypkg:threshold", a bundle ...
    labels = seg.segment(medseg.load("ct.nii.gz"))                # LabelMap on the CT's grid

Specs are resolved by the registered :class:`SegmenterKind` entries, in order:
``SCHEME:REST`` goes to the kind with that scheme (``classical:otsu``); a path
goes to the first kind whose ``detect`` accepts it. Third-party packages add
kinds through the ``medseg.segmenters`` entry-point group: each entry point
names a :class:`SegmenterKind` (or a function returning one), loaded the first
time a spec is resolved. Loaders are ``"module:function"`` strings, so resolving
a spec imports only the kind it needs (no torch for a threshold).
"""

from __future__ import annotations

import functools
import importlib
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from medseg.errors import ModelError
from medseg.io.image import Image, LabelMap

ENTRY_POINT_GROUP = "medseg.segmenters"
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9_.+-]*):(?!//)(.*)$")


@runtime_checkable
class Segmenter(Protocol):
    """What every way of segmenting provides.

    Attributes
    ----------
    name : str
        A short human-readable name (shown in tables and reports).
    label_names : mapping int -> str
        Name of each foreground label value the segmenter produces (0 is background).
    spatial_dims : int or None
        2 or 3, or None when it segments both.
    in_channels : int or None
        Channels the input must have, or None for any.
    postprocess : mapping or None
        Post-processing rules keyed by label name (see :mod:`medseg.postprocess`), or None.

    Optional: ``probabilities(image) -> Image`` with a trailing channel axis,
    one channel per label value 0..N.
    """

    name: str
    label_names: Mapping[int, str]
    spatial_dims: int | None
    in_channels: int | None
    postprocess: Mapping[str, Any] | None

    def fingerprint(self) -> str:
        """A stable hash of everything that changes the output (weights, settings, version)."""
        ...

    def segment(self, image: Image) -> LabelMap:
        """The label map of ``image``, on ``image``'s exact grid."""
        ...


@runtime_checkable
class Promptable(Protocol):
    """Optional, beside :class:`Segmenter`: a model that segments what a prompt points at (SAM/MedSAM-style).

    :func:`medseg.annotate.from_box` and :func:`medseg.annotate.from_points`
    hand their prompt to a segmenter that has these methods (an object, or a
    spec resolved by :func:`load_segmenter`, so a plugin kind can serve a
    model with a user-supplied checkpoint). Both return label 1 on the
    image's exact grid.
    """

    def segment_box(self, image: Image, box: Any) -> LabelMap:
        """The object inside ``box``: ``(2, ndim)`` opposite corners in world mm (LPS)."""
        ...

    def segment_points(self, image: Image, points: Any, positive: Any) -> LabelMap:
        """The object at ``points`` (``(n, ndim)`` world mm); ``positive[i]`` False marks a background point."""
        ...


@dataclass(frozen=True)
class SegmenterKind:
    """One way of turning a spec into a Segmenter.

    Attributes
    ----------
    name : str
        Shown in messages (``"medseg model"``, ``"MONAI bundle"``).
    load : str or callable
        ``"module:function"`` (imported on use) or a callable ``(spec: str, **options) -> Segmenter``.
    scheme : str, optional
        Specs ``SCHEME:REST`` go to this kind (``REST`` is passed as the spec).
    detect : str or callable, optional
        ``(path: Path) -> bool``: whether a path spec is this kind's.
    looks_like : str
        What a path of this kind holds, for the message when no kind accepts a path.
    """

    name: str
    load: str | Callable[..., Segmenter]
    scheme: str | None = None
    detect: str | Callable[[Path], bool] | None = None
    looks_like: str = ""


def _resolve(target: str | Callable[..., Any]) -> Callable[..., Any]:
    if callable(target):
        return target
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


_BUILTIN: list[SegmenterKind] = [
    # nnU-Net first: its detect needs no torch, and a results folder is never a medseg model directory
    SegmenterKind("nnU-Net v2 results folder", "medseg.models.nnunet.segmenter:load_nnunet",
                  detect="medseg.models.nnunet.detect:is_nnunet_folder",
                  looks_like="a folder with plans.json, dataset.json and fold_*/checkpoint_final.pth"),
    SegmenterKind("nnU-Net multi-model task", "medseg.models.nnunet.task:load_task",
                  detect="medseg.models.nnunet.detect:is_task_file",
                  looks_like="a YAML/JSON file with a 'parts' list of nnU-Net results folders"),
    SegmenterKind("medseg model", "medseg.models.model:load_model", detect="medseg.models.model:is_model_dir",
                  looks_like="a folder with model_card.json"),
    SegmenterKind("MONAI bundle", "medseg.models.model:load_model", detect="medseg.models.bundle:is_bundle",
                  looks_like="a folder with configs/inference.json"),
    SegmenterKind("H&E nuclei", "medseg.pathology.segmenters:load_he", scheme="he"),
    SegmenterKind("classical method", "medseg.classical.spec:load_classical", scheme="classical"),
]
_registered: list[SegmenterKind] = []


def register_segmenter(kind: SegmenterKind) -> None:
    """Add ``kind`` to the registry (checked before the built-in kinds; a scheme may be registered once)."""
    if kind.scheme and any(k.scheme == kind.scheme for k in registered_kinds()):
        raise ModelError(f"segmenter scheme {kind.scheme!r} is already registered")
    _registered.insert(0, kind)


@functools.cache
def _plugin_kinds() -> list[SegmenterKind]:
    """The kinds of the installed plugins, read from the entry points once per process (a failed read is retried)."""
    found = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
            kind = obj if isinstance(obj, SegmenterKind) else obj()
        except Exception as exc:
            raise ModelError(f"segmenter plugin {ep.name!r} ({ep.value}) failed to load: {exc}") from exc
        if not isinstance(kind, SegmenterKind):
            raise ModelError(f"segmenter plugin {ep.name!r} ({ep.value}) gave {type(kind).__name__}, "
                             "not a medseg.segmenters.SegmenterKind")
        found.append(kind)
    return found


def registered_kinds() -> list[SegmenterKind]:
    """Every kind, in resolution order: registered in this process, plugins, built-in."""
    return [*_registered, *_plugin_kinds(), *_BUILTIN]


def load_segmenter(spec: Segmenter | str | os.PathLike[str], **options: Any) -> Segmenter:
    """Resolve ``spec`` to a Segmenter.

    Parameters
    ----------
    spec : Segmenter, str or path-like
        A Segmenter (returned as is), ``SCHEME:REST`` for a registered scheme,
        or a path (model directory, MONAI bundle, ...).
    **options
        Passed to the kind's loader (``device="cpu"`` for network models).

    Raises
    ------
    medseg.errors.ModelError
        When no kind accepts the spec (the message lists the kinds tried).
    """
    if isinstance(spec, Segmenter):
        return spec
    text = os.fspath(spec)
    kinds = registered_kinds()
    match = _SCHEME.match(text)
    if match and not Path(text).exists():
        scheme, rest = match.groups()
        for kind in kinds:
            if kind.scheme == scheme:
                return _resolve(kind.load)(rest, **options)
        schemes = ", ".join(sorted(k.scheme for k in kinds if k.scheme)) or "none registered"
        raise ModelError(f"unknown segmenter scheme {scheme!r} (known: {schemes})", text)
    path = Path(text)
    if not path.exists():
        raise ModelError("no such model directory or file", path)
    for kind in kinds:
        if kind.detect is not None and _resolve(kind.detect)(path):
            return _resolve(kind.load)(text, **options)
    tried = "; ".join(f"{k.name}: {k.looks_like or 'not recognised'}" for k in kinds if k.detect is not None)
    raise ModelError(f"not a model medseg can run (expected {tried})", path)


def foreground_names(label_names: Mapping[str, int]) -> dict[int, str]:
    """``{index: name}`` of the foreground labels of a ``{name: index}`` mapping (background 0 left out)."""
    return {int(i): str(n) for n, i in label_names.items() if int(i) != 0}
