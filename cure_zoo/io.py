"""File writing that never leaves a half-written file behind, and hashing.

Every file the zoo writes (weights, checkpoints, JSON, cards) goes through :func:`atomic_write`: the content
is written to a temporary file in the destination's folder and moved into place with ``os.replace``, which
is atomic on POSIX, so a reader sees either the old file or the complete new one.

The writer replaces only a regular file, or creates a new one. Any other target (a symbolic link, a
directory, a FIFO, a device such as ``/dev/full``, a socket) is refused with one line before anything is
written: replacing it would destroy it (a device node replaced by a JSON file), writing through it could
block (a FIFO) or land outside the intended folder (a link). Commands check their output paths with
:func:`check_output_path` before any work, so a bad ``--json`` fails before an attack runs.

Caches that are trusted on a later run (verify's finished chunks, converted weights) are recorded with
:func:`record_checked`: a sidecar ``NAME.sha256`` records the file's sha256 and what it was made from, and
:func:`read_checked` treats a file whose sidecar is missing or disagrees as absent, so it is made again.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import torch
from safetensors.torch import save_file

from .errors import OutputPathError
from .rundir import describe_kind

_HASH_CHUNK = 1 << 20
CHECKED_SUFFIX = ".sha256"


def check_output_target(path: str | os.PathLike) -> Path:
    """Refuse a target the writer may not replace (see the module doc): it must be absent or a regular file."""
    path = Path(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return path
    except OSError as err:
        raise OutputPathError(f"cannot write {path}: {err.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        what = describe_kind(st.st_mode)
        raise OutputPathError(
            f"{path} is {what}; cure-zoo writes only regular files (it replaces them atomically, never writing "
            f"through {what}); pass the path of a new or regular file"
        )
    return path


def check_output_path(path: str | os.PathLike, *, inputs: Iterable[str | os.PathLike] = ()) -> Path:
    """Check, before any work, that ``path`` can be written: a new or regular file (:func:`check_output_target`),
    in a folder that is (or can be made) a writable directory, and none of ``inputs`` (the files the command
    reads, e.g. the weights being evaluated)."""
    path = check_output_target(path)
    for other in inputs:
        if os.path.lexists(other) and os.path.realpath(other) == os.path.realpath(path):
            raise OutputPathError(f"{path} is an input of this command ({other}); write the output elsewhere")
    parent = path.parent
    existing = next((p for p in (parent, *parent.parents) if os.path.lexists(p)), None)
    if existing is not None and not existing.is_dir():
        raise OutputPathError(f"cannot write {path}: {existing} is not a directory")
    if existing == parent:
        try:  # the one reliable test of writability (root ignores modes, a read-only mount does not)
            fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=parent)
            os.close(fd)
            os.unlink(probe)
        except OSError as err:
            raise OutputPathError(f"cannot write {path}: {err.strerror} ({parent})") from None
    return path


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` and move the result to ``path`` atomically (a regular file or a new one)."""
    path = check_output_target(path)
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
    """``torch.save`` atomically (training checkpoints: tensors, optimizer state, RNG states).

    torch's zip writer reports a failed write (a full disk) as a ``RuntimeError`` ("unexpected pos"), not as
    the ``OSError`` it is; that one is turned into an ``OSError`` naming the file and the free space left."""

    def write(p: Path) -> None:
        try:
            torch.save(obj, p)
        except RuntimeError as err:
            free = shutil.disk_usage(p.parent).free
            reason = " ".join(str(err).split())[:120]
            raise OSError(errno.EIO, f"writing failed ({reason}; {free} bytes free on its disk)", str(path)) from None

    return atomic_write(path, write)


def sha256_file(path: str | os.PathLike) -> str:
    with open(path, "rb") as f:
        return sha256_stream(f)[1]


def sha256_stream(f: BinaryIO) -> tuple[int, str]:
    """(size in bytes, sha256) of what is left to read in the binary file ``f``."""
    h, size = hashlib.sha256(), 0
    while chunk := f.read(_HASH_CHUNK):
        h.update(chunk)
        size += len(chunk)
    return size, h.hexdigest()


def record_checked(path: str | os.PathLike, made_from: str) -> Path:
    """Record a just-written cache file's sha256 and ``made_from`` (what it was made from, e.g. a key of the
    inputs) in ``path.sha256``, so :func:`read_checked` can tell later that the file is what was written."""
    path = Path(path)
    record = {"sha256": sha256_file(path), "made_from": made_from}
    write_text_atomic(checked_sidecar(path), json.dumps(record, sort_keys=True) + "\n")
    return path


def read_checked(path: str | os.PathLike, made_from: str) -> bool:
    """Whether ``path`` is intact: a regular file whose sidecar records its current sha256 and ``made_from``.
    A missing, changed or foreign file, or a missing or damaged sidecar, is ``False`` (make it again)."""
    path = Path(path)
    sidecar = checked_sidecar(path)
    try:
        if not (stat.S_ISREG(os.lstat(path).st_mode) and stat.S_ISREG(os.lstat(sidecar).st_mode)):
            return False
        record = json.loads(sidecar.read_text())
        return record == {"sha256": sha256_file(path), "made_from": made_from}
    except (OSError, ValueError):
        return False


def remove_checked(path: str | os.PathLike) -> None:
    """Remove a checked cache file and its sidecar."""
    path = Path(path)
    path.unlink(missing_ok=True)
    checked_sidecar(path).unlink(missing_ok=True)


def checked_sidecar(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_name(path.name + CHECKED_SUFFIX)
