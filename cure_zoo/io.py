"""File writing that never leaves a half-written file behind, and hashing.

Every file the zoo writes (weights, checkpoints, JSON, cards) goes through :func:`atomic_write`: the content
is written to a temporary file in the destination's folder and moved into place with ``os.replace``, which
is atomic on POSIX, so a reader sees either the old file or the complete new one.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

_HASH_CHUNK = 1 << 20


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` and move the result to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_current_umask())  # mkstemp makes 0600; give the usual permissions
    try:
        write(tmp_path)
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def save_weights(
    state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike, metadata: Mapping[str, str] | None = None
) -> Path:
    """Write a state dict as safetensors, atomically. The zoo's one writer of weight files.

    The same tensors and metadata always give the same bytes (so the same sha256): safetensors writes its
    JSON header in a per-process random key order, which :func:`_canonical_header` replaces by sorted keys."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}

    def write(p: Path) -> None:
        save_file(tensors, str(p), metadata=dict(metadata or {}))
        _canonical_header(p)

    return atomic_write(path, write)


def _canonical_header(path: Path) -> None:
    """Rewrite a safetensors file's header with sorted keys, in place: the same JSON content, so the same
    length; a shorter result is padded with spaces, as the format allows."""
    with open(path, "r+b") as f:
        size = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(size))
        text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        if len(text) > size:  # cannot happen for the same content; keep safetensors' own header then
            return
        f.seek(8)
        f.write(text + b" " * (size - len(text)))


def save_torch_atomic(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` atomically (training checkpoints: tensors, optimizer state, RNG states)."""
    return atomic_write(path, lambda p: torch.save(obj, p))


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()
