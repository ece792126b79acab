"""The run directory's file contract: the name of every file a run directory holds, and the rule for what
may leave it or be written into it.

A run directory (``recipes/train.py --output DIR``) holds:

* ``model.safetensors``: the weights of the last epoch; ``config.json``: timm's config plus the ``cure_zoo``
  block (weights sha256, recipe, training summary, and after ``cure-zoo card`` the claims and the card's
  hashes); ``train_hparams.yaml``: the resolved recipe; ``metrics.jsonl``: one record per epoch;
  ``model_best.safetensors``: the best robust epoch's weights; ``checkpoint.pt``: where training resumes;
* after ``cure-zoo eval``/``card``: ``eval.json`` (the evaluation behind the claims), ``README.md`` (the model
  card) and ``figures/*.png``;
* optionally ``analysis/cka_nat_vs_adv.json``: the ``cka.json`` of ``cure-zoo analyze cka RUN_DIR RUN_DIR
  --b-inputs pgd20`` (the paper's Fig. 3: the model's layers on natural vs on its PGD-20 images), which
  ``cure-zoo card`` draws as ``figures/cka_nat_vs_adv.png`` and summarises in the card
  (:func:`read_cka_analysis` reads and checks it).

The rule (one place, used by ``push`` for what it sends and by ``card`` for what it replaces): every such
file is a *regular file with one hard link*, reached from the run directory without following a symbolic
link, so its real path lies inside the run directory. A symlink (to ``/etc/shadow`` or to another folder), a
FIFO, a device, a directory where a file belongs or a hard link to a file elsewhere refuses the whole
operation with one line naming it. :func:`open_inside` enforces the rule on the file descriptor that is
then read, so a file swapped for a link after the check is refused as well.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from .errors import CureZooError

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CONFIG_BLOCK = "cure_zoo"  # config.json's namespaced block: the zoo's metadata, claims and card hashes
EVAL_FILE = "eval.json"
CARD_FILE = "README.md"
HPARAMS_FILE = "train_hparams.yaml"
METRICS_FILE = "metrics.jsonl"
BEST_WEIGHTS_FILE = "model_best.safetensors"
CHECKPOINT_FILE = "checkpoint.pt"
FIGURES_DIR = "figures"
FIGURE_SUFFIX = ".png"
CARD_STAGING_PREFIX = ".card-"  # cure-zoo card builds its files in RUN_DIR/.card-XXXX, then swaps them in
ANALYSIS_DIR = "analysis"
# the schema tag of a CKA result (written by cure_zoo.analysis.cka, checked here)
CKA_SCHEMA = "cure_zoo.cka/1"
# cure-zoo analyze cka RUN_DIR RUN_DIR --b-inputs pgd20's cka.json, copied here; the card draws and cites it
CKA_ANALYSIS_FILE = f"{ANALYSIS_DIR}/cka_nat_vs_adv.json"
CKA_FIGURE = f"{FIGURES_DIR}/cka_nat_vs_adv{FIGURE_SUFFIX}"

# What a push must find (and why it is missing), in upload order, then what it sends when present; nothing
# else leaves.
PUSH_REQUIRED = {
    WEIGHTS_FILE: "the weights (training writes them at the end of the run)",
    CONFIG_FILE: "the model config (training writes it)",
    CARD_FILE: "the model card (cure-zoo card RUN_DIR)",
    EVAL_FILE: "the evaluation (cure-zoo eval RUN_DIR --json RUN_DIR/eval.json, then cure-zoo card RUN_DIR)",
}
PUSH_OPTIONAL = (HPARAMS_FILE, CKA_ANALYSIS_FILE)

_NO_FOLLOW = os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


class RunDirError(CureZooError):
    """A run directory entry breaks the contract (a link, a special file, a directory where a file belongs)."""


def describe_kind(mode: int) -> str:
    """What a file of this ``st_mode`` is, in words."""
    kinds = (
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((word for test, word in kinds if test(mode)), "not a regular file")


def _refusal(path: Path, st: os.stat_result, expect: str) -> RunDirError:
    what = describe_kind(st.st_mode)
    if stat.S_ISLNK(st.st_mode):
        what += f" (to {os.readlink(path)})"
    return RunDirError(
        f"{path} is {what}, not {expect} inside the run directory; a run's files must be real files in it "
        f"(replace it by a copy of what it should hold, or remove it)"
    )


def check_entry(run_dir: str | Path, relpath: str, *, kind: str = "file", must_exist: bool = True) -> bool:
    """Check that ``run_dir/relpath`` obeys the rule (module doc) without following any link: every folder on
    the way a real directory, the entry a regular file with one link (``kind="file"``) or a real directory
    (``kind="dir"``). Returns whether it exists; raises :class:`RunDirError` otherwise."""
    current = Path(run_dir)
    parts = Path(relpath).parts
    for i, part in enumerate(parts):
        current = current / part
        last = i == len(parts) - 1
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            if must_exist:
                raise RunDirError(f"{current} does not exist") from None
            return False
        want_dir = not last or kind == "dir"
        if want_dir and not stat.S_ISDIR(st.st_mode):
            raise _refusal(current, st, "a directory")
        if not want_dir:
            if not stat.S_ISREG(st.st_mode):
                raise _refusal(current, st, "a regular file")
            if st.st_nlink != 1:
                raise RunDirError(
                    f"{current} has {st.st_nlink} hard links, so it may be a file from outside the run directory; "
                    f"replace it by a copy (cp --remove-destination)"
                )
    return True


def open_inside(run_dir: str | Path, relpath: str) -> BinaryIO:
    """Open ``run_dir/relpath`` for reading under the rule, on the descriptor itself: each component is opened
    relative to the previous one with ``O_NOFOLLOW``, and the file must be regular with one link."""
    parts = Path(relpath).parts
    fds = [os.open(run_dir, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))]
    try:
        for part in parts[:-1]:
            try:
                fds.append(os.open(part, os.O_RDONLY | os.O_DIRECTORY | _NO_FOLLOW, dir_fd=fds[-1]))
            except OSError:
                check_entry(run_dir, relpath)  # names the offending component
                raise
        try:
            fd = os.open(parts[-1], os.O_RDONLY | _NO_FOLLOW, dir_fd=fds[-1])
        except OSError:
            check_entry(run_dir, relpath)
            raise
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            os.close(fd)
            check_entry(run_dir, relpath)
            raise RunDirError(f"{Path(run_dir) / relpath} changed while it was being read")
        return os.fdopen(fd, "rb")
    finally:
        for d in fds:
            os.close(d)


def figure_names(run_dir: str | Path) -> list[str]:
    """``figures/*.png`` of a run directory as paths relative to it (sorted), each checked under the rule."""
    run_dir = Path(run_dir)
    if not check_entry(run_dir, FIGURES_DIR, kind="dir", must_exist=False):
        return []
    names = sorted(f"{FIGURES_DIR}/{p.name}" for p in (run_dir / FIGURES_DIR).iterdir() if p.suffix == FIGURE_SUFFIX)
    for name in names:
        check_entry(run_dir, name)
    return names


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The per-epoch records of the run's :data:`METRICS_FILE` (``[]`` when it has none), read under the rule;
    a line that is not a JSON object with an integer ``epoch`` is one :class:`RunDirError` naming the file."""
    import json

    run_dir = Path(run_dir)
    if not check_entry(run_dir, METRICS_FILE, must_exist=False):
        return []
    path = run_dir / METRICS_FILE
    with open_inside(run_dir, METRICS_FILE) as f:
        raw = f.read()
    records = []
    for number, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            record = None
        if not isinstance(record, dict) or not isinstance(record.get("epoch"), int):
            raise RunDirError(
                f"{path} line {number} is not a metrics record (a JSON object with an integer epoch); is the run "
                f"directory damaged?"
            )
        records.append(record)
    return records


def read_cka_analysis(run_dir: str | Path) -> tuple[dict, str] | None:
    """The run's natural-vs-adversarial CKA (:data:`CKA_ANALYSIS_FILE`) and the sha256 of the bytes read, or
    ``None`` when it has none. Read
    under the rule (a link or special file is refused) and checked: a ``cure_zoo.cka/1`` object comparing
    the same layers of the same weights, model B on attacked images (``b_inputs`` not ``clean``), with a
    square matrix of numbers; anything else is one :class:`RunDirError` line naming the file."""
    import hashlib
    import json
    import math

    run_dir = Path(run_dir)
    if not check_entry(run_dir, CKA_ANALYSIS_FILE, must_exist=False):
        return None
    path = run_dir / CKA_ANALYSIS_FILE
    redo = f"make it again: cure-zoo analyze cka {run_dir} {run_dir} --b-inputs pgd20 --out DIR, then copy DIR/cka.json"
    with open_inside(run_dir, CKA_ANALYSIS_FILE) as f:
        raw = f.read()
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as err:
        raise RunDirError(f"{path} is not valid JSON ({err.msg} at line {err.lineno}); {redo}") from None
    except UnicodeDecodeError:
        raise RunDirError(f"{path} is not valid JSON (not UTF-8 text); {redo}") from None

    def bad(why: str) -> RunDirError:
        return RunDirError(f"{path} is not a natural-vs-adversarial CKA of this model: {why}; {redo}")

    if not isinstance(data, dict):
        raise bad(f"it holds a JSON {type(data).__name__}, not an object")
    if data.get("schema") != CKA_SCHEMA:
        raise bad(f"schema {data.get('schema')!r}, not {CKA_SCHEMA!r}")
    layers_a, layers_b, matrix = data.get("layers_a"), data.get("layers_b"), data.get("cka")
    if not isinstance(layers_a, list) or not layers_a or not all(isinstance(n, str) for n in layers_a):
        raise bad("layers_a is not a list of layer names")
    if layers_b != layers_a:
        raise bad("layers_b are not the layers of layers_a")
    if not isinstance(matrix, list) or len(matrix) != len(layers_a):
        raise bad(f"cka is not a {len(layers_a)} x {len(layers_a)} matrix")
    for row in matrix:
        if not isinstance(row, list) or len(row) != len(layers_a):
            raise bad(f"cka is not a {len(layers_a)} x {len(layers_a)} matrix")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in row):
            raise bad("cka holds a value that is not a finite number")
    models, images = data.get("models"), data.get("images")
    if not isinstance(models, dict) or not all(isinstance(models.get(k), dict) for k in ("a", "b")):
        raise bad("models.a / models.b are missing")
    sha = models["a"].get("weights_sha256")
    if not isinstance(sha, str) or not sha or models["b"].get("weights_sha256") != sha:
        raise bad("models a and b are not the same recorded weights")
    if not isinstance(images, dict) or not isinstance(images.get("n_used"), int) or images["n_used"] <= 0:
        raise bad("images.n_used is missing")
    if not isinstance(images.get("b_inputs"), str) or images["b_inputs"] == "clean":
        raise bad(f"model B saw {images.get('b_inputs')!r} images, not adversarial ones (--b-inputs pgd20)")
    for key, kinds in (("eps", (int, float)), ("seed", (int,)), ("dataset", (str,)), ("split", (str,))):
        value = images.get(key)
        if value is not None and (not isinstance(value, kinds) or isinstance(value, bool)):
            raise bad(f"images.{key} is {value!r}")
    if not isinstance(data.get("estimator"), dict):
        raise bad("estimator is missing")
    return data, hashlib.sha256(raw).hexdigest()


def push_files(run_dir: str | Path) -> list[str]:
    """The files one push of ``run_dir`` sends (relative paths, in upload order), each checked under the rule;
    refuses a run lacking a required file, or holding any candidate that breaks the rule."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir} is not a directory; pass a training run directory")
    missing = [
        f"{name} ({why})" for name, why in PUSH_REQUIRED.items() if not check_entry(run_dir, name, must_exist=False)
    ]
    if missing:
        raise RunDirError(f"refusing to push {run_dir}: it lacks " + "; ".join(missing))
    names = list(PUSH_REQUIRED)
    names += [n for n in PUSH_OPTIONAL if check_entry(run_dir, n, must_exist=False)]
    return names + figure_names(run_dir)


def model_files(spec: str | os.PathLike, *, claims: bool = False) -> list[Path]:
    """The local files a model spec (a run directory or a ``.safetensors`` file) is read from: the weights and
    the ``config.json`` beside them, and with ``claims`` the ``eval.json`` they cite; empty for a registered
    name or ``hf-hub:``. A command's outputs must never be these."""
    text = os.fspath(spec)
    if text.startswith("hf-hub:"):
        return []
    path = Path(text)
    if path.is_dir():
        weights, folder = path / WEIGHTS_FILE, path
    elif path.suffix == ".safetensors":
        weights, folder = path, path.parent
    else:
        return []
    return [weights, folder / CONFIG_FILE] + ([folder / EVAL_FILE] if claims else [])


def described_sha256(zoo_block: dict, weights_name: str) -> str | None:
    """The sha256 ``config.json``'s ``cure_zoo`` block records for a weights file of its run directory:
    ``weights_sha256`` for ``model.safetensors``, the best epoch's for ``model_best.safetensors``; ``None``
    when it records none for that file."""
    if weights_name == WEIGHTS_FILE:
        return zoo_block.get("weights_sha256")
    if weights_name == BEST_WEIGHTS_FILE:
        best = (zoo_block.get("training") or {}).get("best_eval") or {}
        return best.get("weights_sha256")
    return None


def staging_leftovers(run_dir: str | Path) -> Iterable[Path]:
    """Folders an interrupted ``cure-zoo card`` left behind in ``run_dir``."""
    run_dir = Path(run_dir)
    return [p for p in run_dir.glob(CARD_STAGING_PREFIX + "*") if p.is_dir() and not p.is_symlink()]


def swap_in(run_dir: str | Path, stage: str | Path, names: Iterable[str]) -> None:
    """Move ``stage/NAME`` over ``run_dir/NAME`` for every name (files, or a folder such as ``figures``), as one
    unit: what they replace is moved into ``stage/.old`` first, and if any move fails every earlier one is
    undone, so the run directory holds all the new entries or all the old ones. ``stage`` must be a folder in
    ``run_dir`` (same filesystem: each move is a rename). A crash half-way leaves a mix that the sha256s
    recorded in ``config.json`` expose (push refuses it) and the old entries in ``stage/.old``."""
    run_dir, stage = Path(run_dir), Path(stage)
    old = stage / ".old"
    old.mkdir()
    done: list[tuple[str, bool]] = []  # (name, whether an old entry was moved aside)
    try:
        for name in names:
            target = run_dir / name
            had = os.path.lexists(target)
            if had:
                os.rename(target, old / name)
            try:
                os.rename(stage / name, target)
            except OSError:
                if had:
                    os.rename(old / name, target)
                raise
            done.append((name, had))
    except OSError as err:
        for name, had in reversed(done):
            os.rename(run_dir / name, stage / name)
            if had:
                os.rename(old / name, run_dir / name)
        raise RunDirError(
            f"could not replace {Path(err.filename or run_dir)}: {err.strerror}; nothing in {run_dir} was changed"
        ) from None
