"""The run-directory file contract, the writer and the caches, on a real filesystem (issue: no file from outside
a run is ever published, no result is silently wrong).

* push sends only regular files whose real path lies inside the run directory (symlinks to a secret file or
  to another folder, hard links, a directory where a figure belongs refuse the whole push), checked on a dry
  run and on a real push to the labelled write-API fake of tests/hub_server.py;
* the writer replaces only regular files: a FIFO, a device node (a private copy of /dev/full), a directory or
  a symlink as ``--json`` is refused before any attack runs, and the weights being evaluated are never a target;
* a card is one unit: with ``figures/`` on a read-only bind mount it changes nothing; push refuses a README,
  claims and eval.json that do not belong together;
* training into a finished run leaves it as it is (same recipe) or is refused (another recipe);
* ``model_best.safetensors`` is checked against its own recorded sha256, and a local file's integrity error
  does not advise ``hf cache delete``;
* verify's resumed chunks and the converted AutoAttack weights are re-made when their file changed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from cure_zoo.cli.main import main
from cure_zoo.errors import CureZooError, OutputPathError
from cure_zoo.hub.card_builder import card_for_run
from cure_zoo.io import sha256_file, write_json_atomic
from cure_zoo.rundir import RunDirError, swap_in

from .hub_server import HubWriteAPI, OlahServer, run_python
from .test_publish import FAKE_TOKEN, make_run

SECRET = "root:$6$not-a-real-hash:19000:0:99999:7:::\n"


@pytest.fixture(scope="module")
def carded(tmp_path_factory) -> Path:
    run = make_run(tmp_path_factory.mktemp("reliability") / "run")
    card_for_run(run, hub_repo="test-org/tiny")
    return run


@pytest.fixture
def run(carded, tmp_path) -> Path:
    return shutil.copytree(carded, tmp_path / "run")


@pytest.fixture
def secret(tmp_path) -> Path:
    """A file outside the run directory that must never be published (stands for /etc/shadow)."""
    path = tmp_path / "outside" / "shadow"
    path.parent.mkdir()
    path.write_text(SECRET)
    return path


def _snapshot(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def _one_line_refusal(capsys, *needles: str) -> str:
    captured = capsys.readouterr()
    err = "".join(line for line in captured.err.splitlines(True) if not line.startswith("notice: "))
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    assert "root:$6$" not in captured.out + err
    return err


# ---------------------------------------------------------------------------------------------------------
# 1. what a push may contain


def _link_hparams(run, secret):
    (run / "train_hparams.yaml").unlink()
    (run / "train_hparams.yaml").symlink_to(secret)
    return "train_hparams.yaml is a symbolic link"


def _link_figure(run, secret):
    (run / "figures" / "x.png").symlink_to(secret)
    return "x.png is a symbolic link"


def _link_figures_dir(run, secret):
    other = secret.parent / "figures"
    shutil.move(run / "figures", other)
    (run / "figures").symlink_to(other, target_is_directory=True)
    return "figures is a symbolic link"


def _link_readme(run, secret):
    copy = secret.parent / "README.md"
    shutil.copyfile(run / "README.md", copy)  # the same card, so only the link itself is wrong
    (run / "README.md").unlink()
    (run / "README.md").symlink_to(copy)
    return "README.md is a symbolic link"


def _hard_link_hparams(run, secret):
    (run / "train_hparams.yaml").unlink()
    os.link(secret, run / "train_hparams.yaml")
    return "train_hparams.yaml has 2 hard links"


def _directory_as_figure(run, secret):
    (run / "figures" / "z.png").mkdir()
    return "z.png is a directory"


@pytest.mark.parametrize(
    "damage", [_link_hparams, _link_figure, _link_figures_dir, _link_readme, _hard_link_hparams, _directory_as_figure]
)
def test_push_refuses_anything_but_regular_files_inside_the_run(run, secret, capsys, damage):
    needle = damage(run, secret)
    assert main(["push", str(run), "--repo", "test-org/tiny", "--dry-run"]) == 2
    _one_line_refusal(capsys, needle)


def test_card_never_writes_through_a_linked_figures_folder(run, secret, capsys):
    _link_figures_dir(run, secret)
    before = _snapshot(secret.parent)
    assert main(["card", str(run)]) == 2
    _one_line_refusal(capsys, "figures is a symbolic link")
    assert _snapshot(secret.parent) == before


_PUSH_TWICE = """
import json, sys
from pathlib import Path
from cure_zoo.cli.main import main
from cure_zoo.hub.push import upload_plan

run, secret = Path(sys.argv[1]), Path(sys.argv[2])
hparams = run / "train_hparams.yaml"
original = hparams.read_bytes()
hparams.unlink()
hparams.symlink_to(secret)
refused = main(["push", str(run), "--repo", "test-org/tiny"])
hparams.unlink()
hparams.write_bytes(original)
plan = {f.path_in_repo: f.sha256 for f in upload_plan(run)}
pushed = main(["push", str(run), "--repo", "test-org/tiny"])
print(json.dumps({"refused": refused, "pushed": pushed, "plan": plan}))
"""


@pytest.mark.slow  # a fresh interpreter: huggingface_hub reads its endpoint once, at import
def test_a_real_push_sends_no_byte_from_outside_and_exactly_the_plan(run, secret, tmp_path):
    """Against the labelled write-API FAKE (tests/hub_server.py: no upload-capable Hub runs on loopback); what
    it receives is committed to git, so the bytes that arrived can be compared with the run's files."""
    olah = OlahServer(tmp_path / "hub")  # not started: only its mirrors folder receives the commits
    writer = HubWriteAPI(olah, FAKE_TOKEN).start()
    try:
        env = olah.client_env(tmp_path / "hf", HF_ENDPOINT=writer.endpoint, HF_TOKEN=FAKE_TOKEN)
        done = run_python(_PUSH_TWICE, env, str(run), str(secret), timeout=900)  # a busy CI machine: slow imports
    finally:
        writer.stop()
    assert done.returncode == 0, done.stderr[-2000:]
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome["refused"] == 2 and outcome["pushed"] == 0
    assert "train_hparams.yaml is a symbolic link" in done.stderr and FAKE_TOKEN not in done.stdout + done.stderr
    assert len(writer.commits) == 1  # the refused push made no call that commits anything
    repo = olah.repo_dir("test-org", "tiny")
    sent = {
        p.relative_to(repo).as_posix(): sha256_file(p) for p in repo.rglob("*") if p.is_file() and ".git" not in p.parts
    }
    assert sent == outcome["plan"]
    assert SECRET.encode() not in b"".join((repo / n).read_bytes() for n in sent)


# ---------------------------------------------------------------------------------------------------------
# 2. the writer replaces only regular files, and refuses before any attack runs


@pytest.fixture
def uncalled_evaluate(monkeypatch):
    import cure_zoo.evaluation as evaluation

    calls = []
    monkeypatch.setattr(evaluation, "evaluate", lambda *a, **k: calls.append(a) or pytest.fail("evaluated"))
    return calls


def _device_full(tmp_path: Path) -> Path:
    """A private character device equal to /dev/full (major 1, minor 7), so no test touches /dev itself."""
    path = tmp_path / "full"
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 7))
    except PermissionError:
        pytest.skip("creating a device node needs CAP_MKNOD")
    return path


@pytest.mark.parametrize("kind", ["fifo", "device", "directory", "symlink"])
def test_eval_json_target_that_is_not_a_regular_file_is_refused_before_any_attack(
    run, tmp_path, capsys, uncalled_evaluate, kind
):
    target = tmp_path / "out.json"
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "device":
        target = _device_full(tmp_path)
    elif kind == "directory":
        target.mkdir()
    else:
        (tmp_path / "elsewhere.json").write_text("{}")
        target.symlink_to(tmp_path / "elsewhere.json")
    mode = os.lstat(target).st_mode
    assert main(["eval", str(run), "--attacks", "nat", "--json", str(target), "--no-progress"]) == 2
    _one_line_refusal(capsys, str(target), "cure-zoo writes only regular files")
    assert os.lstat(target).st_mode == mode and not uncalled_evaluate


@pytest.mark.parametrize("name", ["model.safetensors", "config.json"])
def test_eval_never_overwrites_the_model_it_evaluates(run, capsys, uncalled_evaluate, name):
    before = _snapshot(run)
    assert main(["eval", str(run), "--attacks", "nat", "--json", str(run / name), "--no-progress"]) == 2
    _one_line_refusal(capsys, "is an input of this command")
    assert _snapshot(run) == before


def test_verify_json_never_replaces_the_evaluation_it_checks(run, capsys, monkeypatch):
    import cure_zoo.hub.verify as verify

    monkeypatch.setattr(verify, "evaluate_chunked", lambda *a, **k: pytest.fail("measured"))
    before = _snapshot(run)
    assert main(["verify", str(run), "--json", str(run / "eval.json"), "--no-progress"]) == 2
    _one_line_refusal(capsys, "is an input of this command")
    assert _snapshot(run) == before


def test_the_writer_itself_refuses_special_files(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(OutputPathError, match="is a FIFO"):
        write_json_atomic(fifo, {"a": 1})
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and [p.name for p in tmp_path.iterdir()] == ["fifo"]
    with pytest.raises(OutputPathError, match="is a character device"):
        write_json_atomic(_device_full(tmp_path), {"a": 1})


# ---------------------------------------------------------------------------------------------------------
# 4. a card is one unit; push checks that its parts belong together


def _new_evaluation(run: Path) -> None:
    """The same measurement saved again (another timestamp): a new eval.json, so a new card is due."""
    data = json.loads((run / "eval.json").read_text())
    data["created"] = "2026-01-01T00:00:00"
    (run / "eval.json").write_text(json.dumps(data, indent=2) + "\n")


@contextlib.contextmanager
def _read_only(folder: Path):
    """``folder`` as a read-only bind mount (root ignores file modes, a read-only mount it does not)."""
    if os.geteuid() != 0:
        os.chmod(folder, 0o555)
        try:
            yield
        finally:
            os.chmod(folder, 0o755)
        return
    bind = subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True, text=True)
    if bind.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {bind.stderr.strip()}")
    try:
        ro = subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], capture_output=True, text=True)
        if ro.returncode != 0:
            pytest.skip(f"cannot remount read-only: {ro.stderr.strip()}")
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_a_card_that_cannot_write_its_figures_changes_nothing(run, capsys):
    _new_evaluation(run)
    before = _snapshot(run)
    with _read_only(run / "figures"):
        assert main(["card", str(run)]) == 2
    _one_line_refusal(capsys, "figures", "was changed")
    assert _snapshot(run) == before
    assert not any(p.name.startswith(".card-") for p in run.iterdir())
    assert main(["push", str(run), "--repo", "test-org/tiny", "--dry-run"]) == 2  # the stale card is not pushed
    _one_line_refusal(capsys, "run 'cure-zoo card")
    assert main(["card", str(run)]) == 0  # writable again: the card is made
    assert main(["push", str(run), "--repo", "test-org/tiny", "--dry-run"]) == 0


def test_a_swap_that_fails_half_way_is_undone(tmp_path, monkeypatch):
    run, stage = tmp_path / "run", tmp_path / "run" / ".card-x"
    (run / "figures").mkdir(parents=True)
    (run / "figures" / "a.png").write_text("old figure")
    (run / "README.md").write_text("old card")
    (run / "config.json").write_text("old claims")
    (stage / "figures").mkdir(parents=True)
    for name, text in {"figures/a.png": "new figure", "README.md": "new card", "config.json": "new claims"}.items():
        (stage / name).write_text(text)
    before = _snapshot(run)
    real_rename, moves = os.rename, []

    def failing_rename(src, dst):
        moves.append(dst)
        if len(moves) == 6:  # the last move: config.json into place
            raise OSError(30, "Read-only file system", str(dst))
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", failing_rename)
    with pytest.raises(RunDirError, match="nothing in .* was changed"):
        swap_in(run, stage, ["figures", "README.md", "config.json"])
    monkeypatch.setattr(os, "rename", real_rename)
    assert {k: v for k, v in _snapshot(run).items() if not k.startswith(".card-")} == {
        k: v for k, v in before.items() if not k.startswith(".card-")
    }


def test_push_refuses_a_readme_claims_and_evaluation_that_do_not_belong_together(run, capsys):
    old_readme = (run / "README.md").read_bytes()
    _new_evaluation(run)
    card_for_run(run, hub_repo="other-org/tiny")  # a new card (its README differs: another repo)
    assert main(["push", str(run), "--repo", "test-org/tiny", "--dry-run"]) == 0
    capsys.readouterr()
    (run / "README.md").write_bytes(old_readme)  # what a card that stopped after the claims left behind
    assert main(["push", str(run), "--repo", "test-org/tiny", "--dry-run"]) == 2
    _one_line_refusal(capsys, "README.md and figures/ are not the card made with config.json's claims")


def test_push_refuses_claims_that_are_not_the_evaluations_own_numbers(run, capsys):
    config = json.loads((run / "config.json").read_text())
    config["cure_zoo"]["claims"]["results"]["nat"]["accuracy"] += 10  # sha256s all still match
    (run / "config.json").write_text(json.dumps(config))
    assert main(["push", str(run), "--repo", "test-org/tiny", "--dry-run"]) == 2
    _one_line_refusal(capsys, "are not eval.json's own numbers")


# ---------------------------------------------------------------------------------------------------------
# 5. finished runs are left as they are; 8. model_best.safetensors


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, dict]:
    from cure_zoo.training import load_recipe, train

    from .test_training_run import TINY

    values = {**TINY, "method": "st", "optim.epochs": 1, "eval.every": 1, "checkpoint.save_best": True}
    out = tmp_path_factory.mktemp("finished") / "run"
    train(load_recipe(None, values), out)
    return out, values


@pytest.fixture
def finished_run(finished, tmp_path) -> tuple[Path, dict]:
    out, values = finished
    return shutil.copytree(out, tmp_path / "run"), values


@pytest.mark.parametrize("checkpoint", [True, False])
def test_training_a_finished_carded_run_again_leaves_it_as_it_is(finished_run, checkpoint):
    from cure_zoo.training import load_recipe, train

    out, values = finished_run
    if not checkpoint:
        (out / "checkpoint.pt").unlink()
    config = json.loads((out / "config.json").read_text())
    config["cure_zoo"]["claims"] = {"schema": "cure_zoo.claims/1", "stands for": "a card's claims"}
    write_json_atomic(out / "config.json", config)
    before = _snapshot(out)
    result = train(load_recipe(None, values), out)
    assert result.already_finished and result.epochs_done == 1
    assert _snapshot(out) == before


@pytest.mark.parametrize("checkpoint", [True, False])
def test_training_another_recipe_into_a_finished_run_is_refused(finished_run, checkpoint):
    from cure_zoo.training import load_recipe, train

    out, values = finished_run
    if not checkpoint:
        (out / "checkpoint.pt").unlink()
    before = _snapshot(out)
    with pytest.raises(CureZooError, match="different recipe"):
        train(load_recipe(None, {**values, "optim.lr": 0.2, "method": "at"}), out)
    assert _snapshot(out) == before


def test_weights_of_no_recorded_recipe_are_not_overwritten(finished_run):
    from cure_zoo.training import load_recipe, train

    out, values = finished_run
    (out / "checkpoint.pt").unlink()
    (out / "config.json").unlink()
    with pytest.raises(CureZooError, match="no config.json recording the recipe"):
        train(load_recipe(None, values), out)


def test_the_best_epochs_weights_are_checked_against_their_own_sha256(finished_run, capsys):
    out, _ = finished_run
    best = out / "model_best.safetensors"
    args = ["eval", str(best), "--attacks", "nat", "--n-examples", "4", "--no-progress"]
    assert main(args) == 0
    recorded = json.loads((out / "config.json").read_text())["cure_zoo"]["training"]["best_eval"]
    assert recorded["weights_sha256"] == sha256_file(best)
    capsys.readouterr()
    data = bytearray(best.read_bytes())
    data[-1] ^= 0xFF
    best.write_bytes(bytes(data))
    assert main(args) == 2
    err = _one_line_refusal(capsys, "is corrupted or not the published file", "restore the original file")
    assert "hf cache delete" not in err


# ---------------------------------------------------------------------------------------------------------
# 13. caches are checked before they are trusted


def test_a_changed_verify_chunk_is_measured_again(run, tmp_path, stop_at_second_chunk):
    from cure_zoo.hub.verify import verify

    calls = stop_at_second_chunk
    state = tmp_path / "state"
    kwargs = dict(attacks=["nat"], chunk_size=8, state_root=state, progress=False, log=lambda m: None)
    with pytest.raises(KeyboardInterrupt):
        verify(str(run), **kwargs)
    (chunk,) = state.rglob("chunk_*.json")
    saved = json.loads(chunk.read_text())
    saved["masks"]["nat"] = [not v for v in saved["masks"]["nat"]]  # a changed file, still valid JSON
    chunk.write_text(json.dumps(saved))

    calls.clear()
    report = verify(str(run), **kwargs)
    assert calls == [list(range(0, 8)), list(range(8, 16))]  # the changed chunk was not trusted
    assert report.passed


def test_the_converted_autoattack_weights_are_made_again_when_changed(tmp_path, monkeypatch):
    from cure_zoo.models._hub import pyautoattack_resnet18_file

    monkeypatch.setenv("CURE_ZOO_CACHE", str(tmp_path / "cache"))
    path = pyautoattack_resnet18_file()
    good = sha256_file(path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in a tensor: still a loadable safetensors file
    path.write_bytes(bytes(data))
    assert pyautoattack_resnet18_file() == path and sha256_file(path) == good
