"""Reading nnU-Net's ``checkpoint_final.pth`` without running code from it.

nnU-Net saves a checkpoint with ``torch.save`` of a dict (network weights,
optimizer state, logging lists of numpy scalars, the trainer's init arguments
with a ``torch.device``) and loads it with ``weights_only=False``: a plain
pickle, which may call any importable function. medseg unpickles it with
:class:`RestrictedUnpickler`, which admits only tensors and their storages,
numpy scalars, arrays and dtypes, ``torch.device``/``torch.dtype`` and plain
containers; any other global refuses the file, with a message naming the file
and the global, before anything is called.
"""

from __future__ import annotations

import pickle
import types
import zipfile
from pathlib import Path
from typing import Any

import torch

from medseg.errors import ModelError

_ALLOWED: dict[str, set[str]] = {
    "collections": {"OrderedDict", "defaultdict"},
    "builtins": {"set", "frozenset", "slice", "complex", "bytearray", "range"},
    "_codecs": {"encode"},  # protocol-2 pickles spell bytes as _codecs.encode(str, "latin1")
    "torch._utils": {"_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_parameter",
                     "_rebuild_parameter_with_state", "_rebuild_device_tensor_from_numpy"},  # fmt: skip
    "torch": {"device", "Size", "float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8",
              "uint8", "bool", "complex64", "complex128"},  # fmt: skip
    "numpy": {"dtype", "ndarray"},
    "numpy.core.multiarray": {"scalar", "_reconstruct"},
    "numpy._core.multiarray": {"scalar", "_reconstruct"},
    "numpy.dtypes": {"Float64DType", "Float32DType", "Float16DType", "Int64DType", "Int32DType", "Int16DType",
                     "Int8DType", "UInt64DType", "UInt32DType", "UInt16DType", "UInt8DType", "BoolDType"},  # fmt: skip
}


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle names a global outside the allowlist."""

    def __init__(self, module: str, name: str) -> None:
        self.global_name = f"{module}.{name}"
        super().__init__(f"global {self.global_name} is not allowed")


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler whose ``find_class`` admits only the data types of a checkpoint."""

    def find_class(self, module: str, name: str) -> Any:
        if name in _ALLOWED.get(module, ()):
            return super().find_class(module, name)
        raise RefusedGlobal(module, name)


def _restricted_pickle_module() -> types.ModuleType:
    """A stand-in for the ``pickle`` module that ``torch.load`` uses to read the archive's ``data.pkl``."""
    module = types.ModuleType("medseg_restricted_pickle")
    module.Unpickler = RestrictedUnpickler  # type: ignore[attr-defined]
    module.UnpicklingError = pickle.UnpicklingError  # type: ignore[attr-defined]

    def load(file: Any, **kwargs: Any) -> Any:
        return RestrictedUnpickler(file, **kwargs).load()

    module.load = load  # type: ignore[attr-defined]
    return module


_PICKLE_MODULE = _restricted_pickle_module()


def _max_archive_version(path: Path) -> int | None:
    """The ``version`` record of a torch zip archive, or None (not a zip, or no record)."""
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if info.filename.endswith("/version") or info.filename == "version":
                    return int(archive.read(info).decode().strip() or "0")
    except (zipfile.BadZipFile, OSError, ValueError, UnicodeDecodeError):
        return None
    return None


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint dict of an nnU-Net v2 ``checkpoint_*.pth``, read with :class:`RestrictedUnpickler`.

    Raises
    ------
    ModelError
        A global outside the allowlist (named in the message), a file torch
        cannot read (truncated, corrupt, from a newer format), or a dict
        without the entries of an nnU-Net v2 checkpoint.
    """
    try:
        checkpoint = torch.load(path, map_location="cpu", pickle_module=_PICKLE_MODULE, weights_only=False)
    except RefusedGlobal as exc:
        raise ModelError(
            f"refusing to unpickle the checkpoint: it names the global {exc.global_name}, which could run code "
            "(medseg admits tensors, numpy scalars and dtypes, and plain containers only)",
            path,
        ) from None
    except FileNotFoundError:
        raise ModelError("no such checkpoint file", path) from None
    except Exception as exc:  # torch raises assorted types for corrupt or unknown files
        detail = " ".join(str(exc).split())[:200]
        version = _max_archive_version(path)
        if "version" in detail.lower() or (version is not None and version > 20):
            raise ModelError(
                f"the checkpoint is in a newer file format than this PyTorch ({torch.__version__}) reads"
                f"{f' (archive version {version})' if version is not None else ''}: {detail}",
                path,
            ) from exc
        raise ModelError(f"unreadable checkpoint, truncated or corrupt ({type(exc).__name__}: {detail})",
                         path) from exc
    return _checked(checkpoint, path)


_REQUIRED = ("network_weights",)


def _checked(checkpoint: Any, path: Path) -> dict[str, Any]:
    if not isinstance(checkpoint, dict):
        raise ModelError(f"not an nnU-Net v2 checkpoint: the file holds a {type(checkpoint).__name__}, not a dict",
                         path)
    missing = [k for k in _REQUIRED if k not in checkpoint]
    if missing:
        keys = ", ".join(sorted(map(str, checkpoint))[:8])
        raise ModelError(f"not an nnU-Net v2 checkpoint (or one in a newer format): no {', '.join(missing)} "
                         f"(it has {keys or 'no entries'})", path)
    weights = checkpoint["network_weights"]
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise ModelError("the checkpoint's network_weights is not a mapping of names to tensors", path)
    axes = checkpoint.get("inference_allowed_mirroring_axes")
    if axes is not None and (not isinstance(axes, list | tuple) or not all(isinstance(a, int) for a in axes)):
        raise ModelError(f"inference_allowed_mirroring_axes must be a tuple of axes, got {axes!r}", path)
    return checkpoint


def strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Weights with the ``module.`` (DDP) and ``_orig_mod.`` (torch.compile) prefixes removed."""
    out = {}
    for key, value in state.items():
        for prefix in ("module.", "_orig_mod."):
            if key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out
