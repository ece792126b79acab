"""The card's natural-vs-adversarial CKA section (the paper's Fig. 3 for one model): a run directory holding
``analysis/cka_nat_vs_adv.json`` (made by the real ``cure-zoo analyze cka RUN RUN --b-inputs pgd20``) gets the
figure and the section; a malformed or foreign one is one line and leaves the previous card; none leaves the
card as it was. Push sends the JSON only beside the card drawn from it, and only as a regular file."""

import json
import os
import shutil

import pytest

from cure_zoo.cli.main import main
from cure_zoo.errors import CureZooError
from cure_zoo.hub.card_builder import card_for_run
from cure_zoo.hub.push import upload_plan
from cure_zoo.io import sha256_file
from cure_zoo.rundir import CKA_ANALYSIS_FILE, CKA_FIGURE, read_cka_analysis

from .test_publish import make_run

HEADING = "## Representation similarity: natural vs adversarial images"


@pytest.fixture(scope="module")
def carded(tmp_path_factory):
    """A carded run (no analysis) and the cka.json of the real analysis of its weights."""
    base = tmp_path_factory.mktemp("card_cka")
    run = make_run(base / "run")
    card_for_run(run)
    out = base / "cka"
    args = ["analyze", "cka", str(run), str(run), "--b-inputs", "pgd20", "--n-examples", "8", "--batch-size", "8"]
    assert main([*args, "--no-download", "--out", str(out)]) == 0
    return run, out / "cka.json"


@pytest.fixture
def run(carded, tmp_path):
    return shutil.copytree(carded[0], tmp_path / "run")


def _card_files(run):
    names = ["README.md", "config.json", "eval.json"] + sorted(f"figures/{p.name}" for p in (run / "figures").iterdir())
    return {name: (run / name).read_bytes() for name in names}


def _add_analysis(run, cka_json):
    (run / "analysis").mkdir(exist_ok=True)
    shutil.copyfile(cka_json, run / CKA_ANALYSIS_FILE)


def test_without_the_analysis_the_card_is_unchanged(run):
    before = _card_files(run)
    card_for_run(run)
    assert _card_files(run) == before
    text = (run / "README.md").read_text()
    assert HEADING not in text and "cka" not in text.lower()
    assert "analysis" not in json.loads((run / "config.json").read_text())["cure_zoo"]["card"]
    assert CKA_ANALYSIS_FILE not in [f.path_in_repo for f in upload_plan(run)]


def test_the_analysis_gets_a_figure_a_section_and_goes_up_with_the_card(run, carded):
    _add_analysis(run, carded[1])
    data = json.loads(carded[1].read_text())
    assert main(["card", str(run)]) == 0
    text = (run / "README.md").read_text()
    assert text.count(HEADING) == 1
    section = text.split(HEADING)[1].split("\n## ")[0]
    diagonal = [row[i] for i, row in enumerate(data["cka"])]
    assert f"**{sum(diagonal) / len(diagonal):.3f}**" in section
    assert "PGD-20 adversarial images (L-inf eps 8/255" in section and "8 CIFAR-10 test images" in section
    assert "minibatch (Nguyen et al. 2021)" in section and f"({CKA_FIGURE})" in section
    assert data["models"]["a"]["weights_sha256"][:12] in section and f"`{CKA_ANALYSIS_FILE}`" in section
    assert (run / CKA_FIGURE).read_bytes().startswith(b"\x89PNG")
    card = json.loads((run / "config.json").read_text())["cure_zoo"]["card"]
    assert card["figures"][CKA_FIGURE] == sha256_file(run / CKA_FIGURE)
    assert card["analysis"] == {CKA_ANALYSIS_FILE: sha256_file(run / CKA_ANALYSIS_FILE)}
    plan = [f.path_in_repo for f in upload_plan(run)]
    assert CKA_ANALYSIS_FILE in plan and CKA_FIGURE in plan
    # only that file of analysis/ leaves, and only beside the card drawn from it
    (run / "analysis" / "notes.json").write_text("{}")
    assert "analysis/notes.json" not in [f.path_in_repo for f in upload_plan(run)]
    (run / CKA_ANALYSIS_FILE).write_text((run / CKA_ANALYSIS_FILE).read_text() + " ")
    with pytest.raises(CureZooError, match="is not the analysis the card was drawn from"):
        upload_plan(run)
    (run / CKA_ANALYSIS_FILE).unlink()
    with pytest.raises(CureZooError, match="is not the analysis the card was drawn from"):
        upload_plan(run)


def test_an_analysis_added_after_the_card_stops_the_push(run, carded):
    _add_analysis(run, carded[1])
    with pytest.raises(CureZooError, match=f"{CKA_ANALYSIS_FILE} is not the analysis the card was drawn from"):
        upload_plan(run)


def _edit(key, value):
    def change(path):
        data = json.loads(path.read_text())
        data[key] = value(data) if callable(value) else value
        path.write_text(json.dumps(data))

    return change


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: p.write_text('{"schema": '), "is not valid JSON (Expecting value at line 1)"),
        (lambda p: p.write_text("[]"), "it holds a JSON list, not an object"),
        (_edit("schema", "cure_zoo.eval/1"), "schema 'cure_zoo.eval/1', not 'cure_zoo.cka/1'"),
        (_edit("cka", lambda d: d["cka"][:-1]), "cka is not a"),
        (_edit("cka", lambda d: [[None] * len(r) for r in d["cka"]]), "not a finite number"),
        (_edit("layers_b", ["logits"]), "layers_b are not the layers of layers_a"),
        (_edit("images", lambda d: dict(d["images"], b_inputs="clean")), "not adversarial ones"),
        (_edit("models", lambda d: dict(d["models"], b=dict(d["models"]["b"], weights_sha256="0" * 64))),
         "not the same recorded weights"),
        (_edit("models", lambda d: {k: dict(v, weights_sha256="0" * 64) for k, v in d["models"].items()}),
         "was measured on weights with sha256 000000000000..."),
    ],
)  # fmt: skip
def test_a_malformed_analysis_is_one_line_and_leaves_the_previous_card(run, carded, capsys, damage, message):
    before = _card_files(run)
    _add_analysis(run, carded[1])
    damage(run / CKA_ANALYSIS_FILE)
    capsys.readouterr()
    assert main(["card", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and str(run / CKA_ANALYSIS_FILE) in err
    assert _card_files(run) == before
    assert not list(run.glob(".card-*"))


def test_an_analysis_that_is_a_link_is_refused_by_card_and_push(run, carded, tmp_path, capsys):
    before = _card_files(run)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.copyfile(carded[1], outside / "cka_nat_vs_adv.json")
    os.symlink(outside, run / "analysis")  # the folder itself linked out
    assert main(["card", str(run)]) == 2
    assert "is a symbolic link" in capsys.readouterr().err
    assert _card_files(run) == before
    with pytest.raises(CureZooError, match="is a symbolic link"):
        upload_plan(run)
    (run / "analysis").unlink()
    (run / "analysis").mkdir()
    os.link(outside / "cka_nat_vs_adv.json", run / CKA_ANALYSIS_FILE)  # a second name for a file outside
    with pytest.raises(CureZooError, match="hard links"):
        read_cka_analysis(run)
    with pytest.raises(CureZooError, match="hard links"):
        upload_plan(run)
