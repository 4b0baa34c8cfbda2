"""Model artefacts on disk: ``transformer.pt`` (state dict) + ``transformer.json`` (meta).

Writes are atomic (a temp file in the target directory, then ``os.replace``),
reads use ``torch.load(weights_only=True)`` and check ``format_version`` and the
config, raising :class:`~plugin_backend.errors.ArtifactError` with a message that
names the file and what is wrong. The shipped weights live in
``plugin_backend/scoring/weights/`` and are loaded once per process.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plugin_backend.errors import ArtifactError

if TYPE_CHECKING:
    import torch

    from plugin_backend.scoring.model import Forecaster

__all__ = [
    "DEFAULT_WEIGHTS_DIR",
    "FORMAT_VERSION",
    "META_FILE",
    "WEIGHTS_FILE",
    "load_default_model",
    "load_model",
    "load_model_or_default",
    "save_model",
]

log = logging.getLogger(__name__)

#: Bump when the state-dict layout or the meta schema changes incompatibly.
FORMAT_VERSION = 1
WEIGHTS_FILE = "transformer.pt"
META_FILE = "transformer.json"
DEFAULT_WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "scoring" / "weights"


def _atomic_write(path: Path, write: Any) -> None:
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.chmod(0o644)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_model(
    state_dict: Mapping[str, torch.Tensor], meta: Mapping[str, Any], out_dir: str | Path
) -> tuple[Path, Path]:
    """Write ``transformer.pt`` and ``transformer.json`` into ``out_dir`` atomically.

    ``meta`` must hold the model ``config`` (a dict); ``format_version`` is stamped here.
    Returns the two paths.
    """
    import torch

    if "config" not in meta:
        raise ArtifactError("model meta must contain 'config'")
    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    full_meta = {**dict(meta), "format_version": FORMAT_VERSION}
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    weights_path = directory / WEIGHTS_FILE
    meta_path = directory / META_FILE
    text = json.dumps(full_meta, indent=2, sort_keys=False) + "\n"
    _atomic_write(weights_path, lambda handle: torch.save(tensors, handle))
    _atomic_write(meta_path, lambda handle: handle.write(text.encode("utf-8")))
    return weights_path, meta_path


def _paths(path: str | Path) -> tuple[Path, Path]:
    p = Path(path)
    if p.is_dir():
        return p / WEIGHTS_FILE, p / META_FILE
    if p.suffix == ".json":
        return p.with_suffix(".pt"), p
    return p, p.with_suffix(".json")


def load_model(path: str | Path) -> tuple[Forecaster, dict[str, Any]]:
    """Load a model from a directory (or its ``.pt`` / ``.json`` file).

    Raises ArtifactError for missing, corrupt or incompatible artefacts.
    """
    weights_path, meta_path = _paths(path)
    stamp = []
    for p in (weights_path, meta_path):
        try:
            st = p.stat()
        except OSError as exc:
            raise ArtifactError(f"model artefact {p} is missing or unreadable: {exc}") from exc
        stamp.append((st.st_mtime_ns, st.st_size))
    return _load_cached(str(weights_path.resolve()), str(meta_path.resolve()), tuple(stamp))


@functools.lru_cache(maxsize=8)
def _load_cached(
    weights_name: str, meta_name: str, _stamp: tuple[tuple[int, int], ...]
) -> tuple[Forecaster, dict[str, Any]]:
    import torch

    from plugin_backend.scoring.model import Forecaster, ForecasterConfig

    weights_path, meta_path = Path(weights_name), Path(meta_name)
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"model meta {meta_path} is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict):
        raise ArtifactError(f"model meta {meta_path} must be a JSON object")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise ArtifactError(
            f"model artefact {meta_path} has format_version {version!r}; this version of "
            f"plugin-backend reads format_version {FORMAT_VERSION} (retrain with "
            "`plugin-backend train` or remove the custom model path)"
        )
    try:
        config = ForecasterConfig.from_dict(dict(meta["config"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"model meta {meta_path} has no valid 'config': {exc}") from exc
    try:
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt files
        raise ArtifactError(
            f"model weights {weights_path} are corrupt or unreadable: {exc}"
        ) from exc
    if not isinstance(state, dict):
        raise ArtifactError(f"model weights {weights_path} do not hold a state dict")
    model = Forecaster(config)
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, KeyError, TypeError) as exc:
        raise ArtifactError(
            f"model weights {weights_path} do not match the config in {meta_path}: {exc}"
        ) from exc
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    return model, meta


def load_default_model() -> tuple[Forecaster, dict[str, Any]]:
    """The shipped weights (``plugin_backend/scoring/weights/``), cached per process."""
    try:
        return load_model(DEFAULT_WEIGHTS_DIR)
    except ArtifactError as exc:
        raise ArtifactError(
            f"the shipped transformer weights are unusable ({exc.message}); reinstall "
            "plugin-backend or train new ones with `plugin-backend train`"
        ) from exc


def load_model_or_default(path: str | Path | None) -> tuple[Forecaster, dict[str, Any]]:
    """Load ``path`` when given; on a bad artefact log a warning and use the shipped one."""
    if path is None:
        return load_default_model()
    try:
        return load_model(path)
    except ArtifactError as exc:
        log.warning("falling back to the shipped transformer weights: %s", exc.message)
        return load_default_model()
