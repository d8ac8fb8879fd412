"""The model directory format: weights + a model card, and nothing that unpickles code.

A medseg model directory holds

* ``model.safetensors`` -- the network's state dict (or ``model.pt`` / ``model.pth``,
  a plain state dict that loads with ``torch.load(weights_only=True)``);
* ``model_card.json`` -- the workflow config the model was trained with (labels,
  spacing, orientation, intensity preset, patch size, network and its
  parameters, ...) plus the training data summary, validation Dice, medseg
  version and the SHA-256 of the weights file.

A pickled object in place of the weights, a missing card, a card that does
not validate, or weights that do not match the card are refused with a
:class:`~medseg.errors.ModelError`.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, ValidationError

from medseg._files import read_json
from medseg.atomic import atomic_path, write_text_atomic
from medseg.config import WorkflowConfig, format_validation_error
from medseg.errors import ModelError

CARD_NAME = "model_card.json"
WEIGHTS_NAMES = ("model.safetensors", "model.pt", "model.pth")
CARD_FORMAT = "medseg-model/1"


class ModelCard(WorkflowConfig):
    """A workflow config plus what training produced: provenance, validation and the weights' checksum."""

    format: Literal["medseg-model/1"] = CARD_FORMAT
    medseg_version: str
    created_utc: str = Field(default_factory=lambda: datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    weights_file: str = "model.safetensors"
    weights_sha256: str = ""
    n_parameters: int = 0
    training: dict[str, Any] = Field(default_factory=dict)
    validation: dict[str, Any] = Field(default_factory=dict)

    @property
    def config(self) -> WorkflowConfig:
        """The workflow part of the card (validated with the card: not checked again)."""
        fields = WorkflowConfig.model_fields
        return WorkflowConfig.model_construct(
            self.model_fields_set & set(fields), **{name: getattr(self, name) for name in fields}
        )


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fingerprint(card: ModelCard) -> str:
    """Stable 16-hex-digit hash of the card (which includes the weights' SHA-256)."""
    text = json.dumps(card.model_dump(mode="json", exclude={"created_utc"}), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def save_model_dir(
    out_dir: str | os.PathLike[str],
    state_dict: dict[str, torch.Tensor],
    config: WorkflowConfig,
    *,
    training: dict[str, Any] | None = None,
    validation: dict[str, Any] | None = None,
) -> ModelCard:
    """Write ``model.safetensors`` and ``model_card.json`` into ``out_dir``, atomically each.

    Returns the card written.
    """
    from safetensors.torch import save_file

    from medseg import __version__

    out = Path(out_dir)
    weights = out / WEIGHTS_NAMES[0]
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}
    with atomic_path(weights) as tmp:
        save_file(tensors, str(tmp), metadata={"format": CARD_FORMAT})
    card = ModelCard(
        **config.model_dump(),
        medseg_version=__version__,
        weights_file=weights.name,
        weights_sha256=sha256_file(weights),
        n_parameters=int(sum(t.numel() for t in tensors.values())),
        training=training or {},
        validation=validation or {},
    )
    write_text_atomic(out / CARD_NAME, json.dumps(card.model_dump(mode="json"), indent=2) + "\n")
    return card


def read_card(model_dir: Path) -> ModelCard:
    """Read and validate ``model_card.json``; :class:`ModelError` when missing or invalid."""
    path = model_dir / CARD_NAME
    if not path.is_file():
        raise ModelError(f"not a medseg model directory: {CARD_NAME} is missing", model_dir)
    data = read_json(path, "model card", expect=dict, error=ModelError)
    try:
        return ModelCard.model_validate(data)
    except ValidationError as exc:
        raise ModelError("invalid model card: " + format_validation_error(exc, ModelCard), path) from None


def training_finished(model_dir: Path) -> bool:
    """True when ``model_dir`` holds the card of a training run that ended (its ``training.stopped`` says why);
    an interrupted run's card says ``"running"``."""
    path = model_dir / CARD_NAME
    if not path.is_file():
        return False
    card = read_json(path, "model card", expect=dict, error=ModelError)
    return card.get("training", {}).get("stopped", "running") != "running"


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read weights without executing code: safetensors, or a ``weights_only`` torch state dict.

    Raises
    ------
    ModelError
        For a pickled object (a whole module, a custom class), a corrupt
        file, or anything that is not a mapping of names to tensors.
    """
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as exc:  # safetensors raises assorted types for corrupt files
            raise _unreadable(exc, "weights file", path) from exc
    else:
        state = torch_load(path, "weights file")
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError("the weights file does not hold a state dict (a mapping of names to tensors)", path)
    return state


def _unreadable(exc: Exception, what: str, path: Path) -> ModelError:
    detail = " ".join(str(exc).split())[:160]
    cause = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
    return ModelError(f"unreadable {what}, truncated or corrupt ({cause})", path)


def torch_load(path: Path, what: str, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(weights_only=True)``; a pickled object or a corrupt or truncated file is a :class:`ModelError`."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" not in str(exc):  # garbage bytes, not a refused object
            raise _unreadable(exc, what, path) from exc
        raise ModelError(
            f"refusing to load a pickled object: the {what} may hold only tensors and plain values "
            "(as torch.save(model.state_dict(), ...) writes)",
            path,
        ) from exc
    except Exception as exc:  # torch raises assorted types for corrupt files
        raise _unreadable(exc, what, path) from exc


def load_weights_into(network: torch.nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """``network.load_state_dict(state)``, strictly; a mismatch is a :class:`ModelError` naming the keys."""
    own = network.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        detail = []
        for what, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", wrong)):
            if keys:
                detail.append(f"{what}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''} ({len(keys)})")
        raise ModelError("weights do not match the network described by the model card: " + "; ".join(detail), path)
    network.load_state_dict(state)


def find_weights(model_dir: Path, card: ModelCard) -> Path:
    """The weights file the card names, checked against the card's SHA-256."""
    path = model_dir / card.weights_file
    if not path.is_file():
        raise ModelError(f"weights file {card.weights_file} named by the model card is missing", model_dir)
    if card.weights_sha256 and sha256_file(path) != card.weights_sha256:
        raise ModelError(
            "weights do not match the model card (SHA-256 differs): card and weights are from different models", path
        )
    return path
