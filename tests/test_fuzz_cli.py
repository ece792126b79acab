"""Malformed input, generated, against every command: ``cure-zoo eval|card|push|verify`` and ``recipes/train.py``.

Each case builds one bad input (a missing or binary file, a truncated safetensors whose sha256 was updated, a
JSON of the wrong type, a bad ``--set`` value or eps, an unwritable or full output folder, a refused Hub
endpoint, a leftover torchrun environment) and asserts what the team promises for every user mistake and I/O
fault: exit status 2, exactly one line on stderr naming the problem, no traceback, and no file changed outside
the case's own output path (every file's size, mtime and sha256 compared before and after).

Cases run in-process through the real ``main()`` functions (fast); two run the real entry points as
subprocesses to show those behave the same. Read-only and full folders are real tmpfs mounts (root only;
skipped with the reason otherwise).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

import cure_zoo  # noqa: F401
from cure_zoo.cli.main import main as cli_main
from cure_zoo.io import sha256_file
from tests.tiny_models import save_run_dir

REPO = Path(__file__).resolve().parents[1]
TRAIN_PY = REPO / "recipes" / "train.py"


def _train_main() -> Callable[[list[str]], int]:
    spec = importlib.util.spec_from_file_location("cure_zoo_train_script", TRAIN_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


# ---------------------------------------------------------------------------------------------------------
# the tree every case reads from


def _mount_tmpfs(path: Path, *, read_only: bool = False) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(path)], capture_output=True)
    if done.returncode != 0:
        return False
    if read_only:
        (path / "run").mkdir()
        subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True, capture_output=True)
    return True


@dataclass
class Tree:
    root: Path
    run: Path  # a valid tiny run directory (weights + config)
    carded: Path  # the same, evaluated and carded (claims, README, eval.json)
    recipe: Path  # a valid tiny training recipe
    read_only: Path | None  # a read-only tmpfs (None: cannot mount here)
    full: Path | None  # a full tmpfs
    mounts: list[Path] = field(default_factory=list)


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Tree:
    root = tmp_path_factory.mktemp("fuzz")
    run = save_run_dir(root / "run")
    carded = save_run_dir(root / "carded")
    common = ["--attacks", "nat", "--n-examples", "4", "--no-progress", "--device", "cpu"]
    assert cli_main(["eval", str(carded), *common, "--json", str(carded / "eval.json")]) == 0
    assert cli_main(["card", str(carded)]) == 0
    recipe = root / "tiny.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "method": "st",
                "model": {"architecture": "cifar_resnet18", "args": {"widths": [4, 4, 4, 4]}},
                "data": {"source": "bundled", "train_examples": 16},
                "optim": {"batch_size": 16, "epochs": 1},
                "eval": {"every": 0},
                "run": {"progress": False, "tensorboard": False},
            }
        )
    )
    read_only = root / "ro" if _mount_tmpfs(root / "ro", read_only=True) else None
    full = root / "full" if _mount_tmpfs(root / "full") else None
    t = Tree(root, run, carded, recipe, read_only, full, [m for m in (read_only, full) if m is not None])
    try:
        if full is not None:  # fill it: no byte left
            fd = os.open(full / "filler", os.O_WRONLY | os.O_CREAT)
            try:
                while os.write(fd, b"\0" * 4096):
                    pass
            except OSError:
                pass
            finally:
                os.close(fd)
        yield t
    finally:
        for mount in t.mounts:
            subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def _snapshot(paths: list[Path], skip: list[Path]) -> dict[str, tuple]:
    """Every file and folder under ``paths``, except under ``skip``: kind, size, mtime, sha256."""
    out = {}
    skip_resolved = [str(p.resolve()) for p in skip]
    for base in paths:
        if not base.exists():
            continue
        for dirpath, dirnames, filenames in os.walk(base):
            for name in dirnames + filenames:
                p = os.path.join(dirpath, name)
                rp = os.path.realpath(p)
                if any(rp == s or rp.startswith(s + os.sep) for s in skip_resolved):
                    continue
                st = os.lstat(p)
                digest = None
                if os.path.isfile(p) and not os.path.islink(p):
                    with open(p, "rb") as f:
                        digest = hashlib.sha256(f.read()).hexdigest()
                out[p] = (st.st_mode, st.st_size, st.st_mtime_ns, digest)
    return out


# ---------------------------------------------------------------------------------------------------------
# the cases


@dataclass(frozen=True)
class Case:
    id: str
    tool: str  # "cli" | "train"
    argv: Callable[[Tree, Path], list[str]]  # (tree, the case's scratch folder) -> arguments
    expect: str  # a piece of the one error line
    setup: Callable[[Tree, Path], None] | None = None  # makes the bad input inside the scratch folder
    env: dict[str, str | None] = field(default_factory=dict)
    needs: str | None = None  # "read_only" | "full": a tmpfs this case writes into
    output: Callable[[Tree, Path], Path] | None = None  # the case's own output (may be touched)


def _copy_run(src_attr: str = "run"):
    def copy(tree: Tree, scratch: Path) -> Path:
        dst = scratch / "m"
        shutil.copytree(getattr(tree, src_attr), dst)
        return dst

    return copy


def _edit_config(edit: Callable[[dict], object], raw: bytes | None = None):
    def setup(tree: Tree, scratch: Path) -> None:
        m = _copy_run()(tree, scratch)
        if raw is not None:
            (m / "config.json").write_bytes(raw)
            return
        cfg = json.loads((m / "config.json").read_text())
        (m / "config.json").write_text(json.dumps(edit(cfg)))

    return setup


def _edit_weights(damage: Callable[[Path], None], *, update_sha: bool = True):
    def setup(tree: Tree, scratch: Path) -> None:
        m = _copy_run()(tree, scratch)
        damage(m / "model.safetensors")
        if update_sha:  # the sha256 matches: what is tested is reading and loading the file itself
            cfg = json.loads((m / "config.json").read_text())
            cfg["cure_zoo"]["weights_sha256"] = sha256_file(m / "model.safetensors")
            (m / "config.json").write_text(json.dumps(cfg))

    return setup


def _tensors(edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        tensors = load_file(str(path))
        edit(tensors)
        save_file(tensors, str(path))

    return damage


def _write(name: str, data: bytes | str):
    def setup(tree: Tree, scratch: Path) -> None:
        p = scratch / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data if isinstance(data, bytes) else data.encode())

    return setup


def _carded_eval(data: bytes | str):
    def setup(tree: Tree, scratch: Path) -> None:
        m = _copy_run("carded")(tree, scratch)
        (m / "eval.json").write_bytes(data if isinstance(data, bytes) else data.encode())

    return setup


def _carded_file(name: str, data: bytes | str):
    def setup(tree: Tree, scratch: Path) -> None:
        m = _copy_run("carded")(tree, scratch)
        (m / name).write_bytes(data if isinstance(data, bytes) else data.encode())

    return setup


def _checkpoint(payload: Callable[[], object] | bytes):
    def setup(tree: Tree, scratch: Path) -> None:
        out = scratch / "out"
        out.mkdir()
        if isinstance(payload, bytes):
            (out / "checkpoint.pt").write_bytes(payload)
        else:
            torch.save(payload(), out / "checkpoint.pt")

    return setup


def _same_recipe_wrong_shapes() -> dict:
    from cure_zoo.training.checkpoint import FORMAT
    from cure_zoo.training.recipe import load_recipe

    recipe = load_recipe(str(_same_recipe_wrong_shapes.recipe))  # set by the test before the case runs
    return {"format": FORMAT, "recipe": recipe.to_dict(), "model": {"conv1.weight": torch.zeros(1)}}


BINARY = bytes(range(256)) * 8
M = lambda t, s: str(s / "m")  # noqa: E731  (the scratch copy of a run)
EVAL = ["--attacks", "nat", "--no-progress", "--device", "cpu"]
TRAIN = lambda t, s, *more: ["--recipe", str(t.recipe), "--output", str(s / "out"), *more]  # noqa: E731


CASES = [
    # ---- eval: what MODEL names
    Case("eval-missing-path", "cli", lambda t, s: ["eval", str(s / "nowhere"), *EVAL], "does not exist"),
    Case("eval-missing-weights", "cli", lambda t, s: ["eval", str(s / "d"), *EVAL], "has no model.safetensors",
         setup=_write("d/config.json", "{}")),
    Case("eval-no-config", "cli", lambda t, s: ["eval", str(s / "d" / "w.safetensors"), *EVAL], "has no config.json",
         setup=lambda t, s: (s / "d").mkdir() or shutil.copy(t.run / "model.safetensors", s / "d" / "w.safetensors")),
    Case("eval-config-not-json", "cli", lambda t, s: ["eval", M(t, s), *EVAL], "is not valid JSON",
         setup=_edit_config(None, raw=b"{architecture: cifar")),
    Case("eval-config-binary", "cli", lambda t, s: ["eval", M(t, s), *EVAL], "config.json",
         setup=_edit_config(None, raw=BINARY)),
    Case("eval-config-list", "cli", lambda t, s: ["eval", M(t, s), *EVAL], "names no 'architecture'",
         setup=_edit_config(lambda c: [c])),
    Case("eval-config-string", "cli", lambda t, s: ["eval", M(t, s), *EVAL], "names no 'architecture'",
         setup=_edit_config(lambda c: "cifar_resnet18")),
    Case("eval-config-no-arch", "cli", lambda t, s: ["eval", M(t, s), *EVAL], "names no 'architecture'",
         setup=_edit_config(lambda c: {k: v for k, v in c.items() if k != "architecture"})),
    Case("eval-config-arch-number", "cli", lambda t, s: ["eval", M(t, s), *EVAL], "names no 'architecture'",
         setup=_edit_config(lambda c: {**c, "architecture": 18})),
    Case("eval-config-unknown-arch", "cli", lambda t, s: ["eval", M(t, s), *EVAL], "unknown model 'cifar_resnet99'",
         setup=_edit_config(lambda c: {**c, "architecture": "cifar_resnet99"})),
    Case("eval-config-non-zoo-arch", "cli", lambda t, s: ["eval", M(t, s), *EVAL], "cannot build 'resnet18'",
         setup=_edit_config(lambda c: {**c, "architecture": "resnet18"})),
    Case("eval-config-inconsistent-classes", "cli", lambda t, s: ["eval", M(t, s), *EVAL], "inconsistent",
         setup=_edit_config(lambda c: {**c, "num_classes": 100, "model_args": {**c["model_args"], "num_classes": 10}})),
    Case("eval-config-classes-unlike-weights", "cli", lambda t, s: ["eval", M(t, s), *EVAL], "do not fit",
         setup=_edit_config(lambda c: {**c, "num_classes": 100})),
    Case("eval-config-model-args-list", "cli", lambda t, s: ["eval", M(t, s), *EVAL], "'model_args' must be dict",
         setup=_edit_config(lambda c: {**c, "model_args": [8, 16]})),
    Case("eval-config-model-args-unknown", "cli", lambda t, s: ["eval", M(t, s), *EVAL], "cannot build",
         setup=_edit_config(lambda c: {**c, "model_args": {"depth": 3}})),
    Case("eval-config-block-list", "cli", lambda t, s: ["eval", M(t, s), *EVAL], "'cure_zoo' must be dict",
         setup=_edit_config(lambda c: {**c, "cure_zoo": []})),
    Case("eval-weights-truncated", "cli", lambda t, s: ["eval", M(t, s), *EVAL], "not a readable weights file",
         setup=_edit_weights(lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]))),
    Case("eval-weights-random", "cli", lambda t, s: ["eval", M(t, s), *EVAL], "not a readable weights file",
         setup=_edit_weights(lambda p: p.write_bytes(BINARY))),
    Case("eval-weights-empty", "cli", lambda t, s: ["eval", M(t, s), *EVAL], "not a readable weights file",
         setup=_edit_weights(lambda p: p.write_bytes(b""))),
    Case("eval-weights-missing-key", "cli", lambda t, s: ["eval", M(t, s), *EVAL], "missing from the file",
         setup=_edit_weights(_tensors(lambda d: d.pop("linear.bias")))),
    Case("eval-weights-extra-key", "cli", lambda t, s: ["eval", M(t, s), *EVAL], "the model does not have",
         setup=_edit_weights(_tensors(lambda d: d.update(extra=torch.zeros(3))))),
    Case("eval-weights-mis-shaped", "cli", lambda t, s: ["eval", M(t, s), *EVAL], "of a different shape",
         setup=_edit_weights(_tensors(lambda d: d.update({"conv1.weight": torch.zeros(1, 3, 3, 3)})))),
    Case("eval-weights-sha-mismatch", "cli", lambda t, s: ["eval", M(t, s), *EVAL], "corrupted",
         setup=_edit_weights(lambda p: p.write_bytes(p.read_bytes()[:-8] + b"\0" * 8), update_sha=False)),
    Case("eval-hf-hub-empty", "cli", lambda t, s: ["eval", "hf-hub:", *EVAL], "names no Hub repository"),
    Case("eval-hf-hub-dotdot", "cli", lambda t, s: ["eval", "hf-hub:../..", *EVAL], "names no Hub repository"),
    Case("eval-hf-hub-three-parts", "cli", lambda t, s: ["eval", "hf-hub:a/b/c", *EVAL], "names no Hub repository"),
    Case("eval-hf-hub-no-org", "cli", lambda t, s: ["eval", "hf-hub:justname", *EVAL], "names no Hub repository"),
    Case("eval-unknown-name", "cli", lambda t, s: ["eval", "cure_resnet19_cifar10", *EVAL], "unknown model"),
    # ---- eval: options
    *[
        Case(f"eval-eps-{i}", "cli", lambda t, s, e=e: ["eval", str(t.run), *EVAL, "--eps", e], want)
        for i, (e, want) in enumerate(
            [("abc", "cannot read eps"), ("8/0", "cannot read eps"), ("-1", "positive"), ("300", "larger than 1"),
             ("nan", "cannot read eps"), ("inf", "cannot read eps"), ("", "cannot read eps"), ("8//255", "eps")]
        )
    ],
    Case("eval-attack-unknown", "cli", lambda t, s: ["eval", str(t.run), "--attacks", "pgd7"], "pgd7"),
    Case("eval-attack-bad-eps", "cli", lambda t, s: ["eval", str(t.run), "--attacks", "pgd20@x"], "eps"),
    Case("eval-n-examples-zero", "cli", lambda t, s: ["eval", str(t.run), *EVAL, "--n-examples", "0"], "positive"),
    Case("eval-batch-zero", "cli", lambda t, s: ["eval", str(t.run), *EVAL, "--batch-size", "0"], "positive"),
    Case("eval-batch-word", "cli", lambda t, s: ["eval", str(t.run), "--batch-size", "many"], "positive integer"),
    Case("eval-device-tpu", "cli", lambda t, s: ["eval", str(t.run), *EVAL[:-2], "--device", "tpu"], "unknown device"),
    Case("eval-dataset-unknown", "cli", lambda t, s: ["eval", str(t.run), *EVAL, "--dataset", "imagenet"], "imagenet"),
    Case("eval-json-is-dir", "cli", lambda t, s: ["eval", str(t.run), *EVAL, "--json", str(s)], "directory"),
    Case("eval-json-under-file", "cli", lambda t, s: ["eval", str(t.run), *EVAL, "--json", str(s / "f" / "o.json")],
         "not a directory", setup=_write("f", "x")),
    Case("eval-json-is-the-weights", "cli",
         lambda t, s: ["eval", M(t, s), *EVAL, "--json", str(s / "m" / "model.safetensors")], "input",
         setup=lambda t, s: _copy_run()(t, s) and None),
    Case("eval-json-read-only", "cli", lambda t, s: ["eval", str(t.run), *EVAL, "--json", str(t.read_only / "o.json")],
         "Read-only file system", needs="read_only"),
    Case("eval-world-size-no-master", "cli", lambda t, s: ["eval", str(t.run), *EVAL], "MASTER_ADDR",
         env={"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": None, "MASTER_PORT": None}),
    Case("eval-world-size-word", "cli", lambda t, s: ["eval", str(t.run), *EVAL], "WORLD_SIZE='two'",
         env={"WORLD_SIZE": "two"}),
    # ---- card
    Case("card-missing-run", "cli", lambda t, s: ["card", str(s / "nowhere")], "nowhere"),
    Case("card-neither", "cli", lambda t, s: ["card"], "give either RUN_DIR or --all-registered"),
    Case("card-eval-list", "cli", lambda t, s: ["card", M(t, s)], "not an object", setup=_carded_eval("[1, 2]")),
    Case("card-eval-not-json", "cli", lambda t, s: ["card", M(t, s)], "not valid JSON", setup=_carded_eval("{x")),
    Case("card-eval-binary", "cli", lambda t, s: ["card", M(t, s)], "eval.json", setup=_carded_eval(BINARY)),
    Case("card-eval-schema", "cli", lambda t, s: ["card", M(t, s)], "not a cure-zoo evaluation result",
         setup=_carded_eval('{"schema": "other/1"}')),
    Case("card-eval-fields", "cli", lambda t, s: ["card", M(t, s)], "malformed",
         setup=_carded_eval('{"schema": "cure_zoo.eval/1", "dataset": 5}')),
    Case("card-eval-option-missing", "cli", lambda t, s: ["card", str(t.run), "--eval", str(s / "none.json")],
         "none.json"),
    Case("card-metrics-damaged", "cli", lambda t, s: ["card", M(t, s)], "metrics.jsonl line 2",
         setup=_carded_file("metrics.jsonl", '{"epoch": 1}\n{x\n')),
    Case("card-metrics-binary", "cli", lambda t, s: ["card", M(t, s)], "metrics.jsonl line 1",
         setup=_carded_file("metrics.jsonl", BINARY)),
    Case("card-grad-stats-damaged", "cli", lambda t, s: ["card", M(t, s)], "gradient statistics",
         setup=_carded_file("metrics.jsonl", '{"epoch": 1, "grad_stats": [{"kind": "updated", "global_step": 1, '
                            '"epoch": 1, "p": 10, "tensors": {"w": {"updated_pct": 50}}}]}\n')),
    Case("card-config-list", "cli", lambda t, s: ["card", M(t, s)], "config.json",
         setup=lambda t, s: (_copy_run("carded")(t, s) / "config.json").write_text("[]")),
    # ---- push (HF_HUB_OFFLINE=1 and an endpoint on a closed loopback port, from conftest)
    Case("push-missing-run", "cli", lambda t, s: ["push", str(s / "nowhere"), "--repo", "org/name", "--dry-run"],
         "nowhere"),
    Case("push-uncarded", "cli", lambda t, s: ["push", str(t.run), "--repo", "org/name", "--dry-run"], "card"),
    Case("push-bad-repo", "cli", lambda t, s: ["push", str(t.carded), "--repo", "../..", "--dry-run"], "../.."),
    Case("push-bad-repo-spaces", "cli", lambda t, s: ["push", str(t.carded), "--repo", "my org/x y", "--dry-run"],
         "my org/x y"),
    Case("push-no-token", "cli", lambda t, s: ["push", str(t.carded), "--repo", "org/name"], "token"),
    Case("push-refused-endpoint", "cli", lambda t, s: ["push", str(t.carded), "--repo", "org/name"],
         "nothing was committed", env={"HF_TOKEN": "hf_fuzz_not_a_real_token", "_ONLINE": "1"}),
    Case("push-config-list", "cli", lambda t, s: ["push", M(t, s), "--repo", "org/name", "--dry-run"], "config.json",
         setup=lambda t, s: (_copy_run("carded")(t, s) / "config.json").write_text("[]")),
    # ---- verify
    Case("verify-missing", "cli", lambda t, s: ["verify", str(s / "nowhere"), "--no-progress"], "does not exist"),
    Case("verify-no-claims", "cli", lambda t, s: ["verify", str(t.run), "--no-progress"], "publishes no claims"),
    Case("verify-chunk-zero", "cli", lambda t, s: ["verify", str(t.carded), "--chunk-size", "0"], "positive"),
    Case("verify-batch-zero", "cli", lambda t, s: ["verify", str(t.carded), "--batch-size", "0"], "positive"),
    Case("verify-state-dir-under-file", "cli",
         lambda t, s: ["verify", str(t.carded), "--state-dir", str(s / "f" / "st"), "--no-progress"], "--state-dir",
         setup=_write("f", "x")),
    Case("verify-state-dir-read-only", "cli",
         lambda t, s: ["verify", str(t.carded), "--state-dir", str(t.read_only / "st")], "--state-dir",
         needs="read_only"),
    Case("verify-state-dir-full", "cli", lambda t, s: ["verify", str(t.carded), "--state-dir", str(t.full / "st")],
         "--state-dir", needs="full"),
    Case("verify-json-is-dir", "cli", lambda t, s: ["verify", str(t.carded), "--json", str(s)], "directory"),
    Case("verify-claims-eval-damaged", "cli", lambda t, s: ["verify", M(t, s), "--no-progress"], "eval.json",
         setup=_carded_eval("{}")),
    # ---- recipes/train.py
    Case("train-no-recipe", "train", lambda t, s: [], "--recipe is required"),
    Case("train-unknown-option", "train", lambda t, s: ["--bogus"], "unrecognized arguments: --bogus"),
    Case("train-unknown-recipe", "train", lambda t, s: ["--recipe", "cure_resnet19_cifar10"], "no recipe named"),
    Case("train-missing-file", "train", lambda t, s: ["--recipe", str(s / "none.yaml")], "does not exist"),
    Case("train-binary-recipe", "train", lambda t, s: ["--recipe", str(s / "r.yaml")], "not a valid YAML recipe",
         setup=_write("r.yaml", BINARY)),
    Case("train-invalid-yaml", "train", lambda t, s: ["--recipe", str(s / "r.yaml")], "not a valid YAML recipe",
         setup=_write("r.yaml", "optim: [1, 2\n")),
    Case("train-list-recipe", "train", lambda t, s: ["--recipe", str(s / "r.yaml")], "must hold a mapping",
         setup=_write("r.yaml", "- 1\n- 2\n")),
    Case("train-recipe-is-dir", "train", lambda t, s: ["--recipe", str(s / "d.yaml")], "d.yaml",
         setup=lambda t, s: (s / "d.yaml").mkdir()),
    Case("train-unknown-key", "train", lambda t, s: ["--recipe", str(s / "r.yaml")], "unknown recipe key",
         setup=_write("r.yaml", "optim:\n  learning_rate: 0.1\n")),
    Case("train-section-not-mapping", "train", lambda t, s: ["--recipe", str(s / "r.yaml")], "must be a mapping",
         setup=_write("r.yaml", "optim: 3\n")),
    *[
        Case(f"train-set-{i}", "train", lambda t, s, o=o: ["--recipe", "smoke_cure_cifar10", "--set", o], want)
        for i, (o, want) in enumerate(
            [("optim.lr", "key=value"), ("=3", "key=value"), ("optim.lr=fast", "optim.lr"),
             ("optim.lr=8/0", "optim.lr"), ("optim.lr=.nan", "optim.lr"), ("optim.epochs=1.5", "optim.epochs"),
             ("optim.epochs=1e3", "optim.epochs"), ("nope.key=1", "unknown recipe key"),
             ("attack.eps=8/x", "attack.eps"), ("optim.milestones=[a", "optim.milestones"),
             ("method=magic", "method")]
        )
    ],
    Case("train-output-under-file", "train", lambda t, s: TRAIN(t, s)[:-1] + [str(s / "f" / "out")], "Not a directory",
         setup=_write("f", "x")),
    Case("train-output-read-only", "train", lambda t, s: TRAIN(t, s)[:-1] + [str(t.read_only / "run" / "out")],
         "Read-only file system", needs="read_only"),
    Case("train-output-full", "train", lambda t, s: TRAIN(t, s)[:-1] + [str(t.full / "out")], "No space left",
         needs="full", output=lambda t, s: t.full),
    Case("train-checkpoint-empty", "train", TRAIN, "cannot read the training checkpoint",
         setup=_checkpoint(b""), output=lambda t, s: s / "out"),
    Case("train-checkpoint-random", "train", TRAIN, "cannot read the training checkpoint",
         setup=_checkpoint(BINARY), output=lambda t, s: s / "out"),
    Case("train-checkpoint-a-list", "train", TRAIN, "not a cure_zoo training checkpoint",
         setup=_checkpoint(lambda: [1, 2, 3]), output=lambda t, s: s / "out"),
    Case("train-checkpoint-wrong-shapes", "train", TRAIN, "does not fit this run",
         setup=_checkpoint(_same_recipe_wrong_shapes), output=lambda t, s: s / "out"),
    Case("train-world-size-no-master", "train", TRAIN, "MASTER_ADDR",
         env={"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": None, "MASTER_PORT": None},
         output=lambda t, s: s / "out"),
]  # fmt: skip


def test_there_are_at_least_50_cases():
    assert len(CASES) >= 50 and len({c.id for c in CASES}) == len(CASES)


@pytest.fixture(scope="module")
def train_main():
    return _train_main()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_malformed_input_is_one_line_exit_2_and_changes_nothing(case, tree, tmp_path, capsys, monkeypatch, train_main):
    if case.needs is not None and getattr(tree, case.needs) is None:
        pytest.skip(f"needs a {case.needs} tmpfs: mounting one needs root and mount(8), not available here")
    _same_recipe_wrong_shapes.recipe = tree.recipe
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    if case.setup is not None:
        case.setup(tree, scratch)
    for key, value in case.env.items():
        if key == "_ONLINE":  # huggingface_hub read HF_HUB_OFFLINE at import: switch its constant
            import huggingface_hub.constants

            monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        elif value is None:
            monkeypatch.delenv(key, raising=False)
        else:
            monkeypatch.setenv(key, value)
    argv = case.argv(tree, scratch)
    watched = [tree.root, scratch, Path(os.environ["CURE_ZOO_CACHE"]), Path(os.environ["HF_HOME"])]
    skip = [case.output(tree, scratch)] if case.output is not None else []
    before = _snapshot(watched, skip)
    capsys.readouterr()
    entry = cli_main if case.tool == "cli" else train_main
    try:
        status = entry(argv)
    except SystemExit as stop:  # argparse's usage errors
        status = stop.code
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 2, (argv, err[-2000:])
    assert "Traceback" not in err, err
    assert len(lines) == 1, lines
    assert case.expect.lower() in lines[0].lower(), lines[0]
    assert "hf_fuzz_not_a_real_token" not in out + err
    after = _snapshot(watched, skip)
    changed = sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))
    assert not changed, changed


@pytest.mark.slow
@pytest.mark.parametrize(
    ("command", "expect"),
    [
        ([sys.executable, "-m", "cure_zoo.cli.main", "eval", "hf-hub:../..", "--attacks", "nat"], "names no Hub"),
        ([sys.executable, str(TRAIN_PY), "--recipe", "smoke_cure_cifar10", "--set", "optim.lr=fast"], "optim.lr"),
    ],
    ids=["cure-zoo", "train.py"],
)
def test_the_real_entry_points_behave_the_same(command, expect):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1 and expect in lines[0], done.stderr[-2000:]
