"""``cure-zoo analyze``: each analysis end to end on a saved run directory and the bundled real images, and
its one-line errors with exit status 2."""

import json

import pytest

from cure_zoo.cli.main import main
from tests.tiny_models import save_run_dir


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return save_run_dir(tmp_path_factory.mktemp("tiny_run"))


def test_analyze_cka_writes_the_matrix_and_the_heatmap(run_dir, tmp_path, capsys):
    out = tmp_path / "cka"
    args = ["analyze", "cka", str(run_dir), str(run_dir), "--n-examples", "24", "--batch-size", "12"]
    assert main([*args, "--out", str(out), "--layers-b", "layer1.0,logits"]) == 0
    stdout = capsys.readouterr().out
    assert "linear CKA of 10 x 2 layers on 24 cifar10 images" in stdout and "wrote" in stdout
    obj = json.loads((out / "cka.json").read_text())
    assert obj["layers_b"] == ["layer1.0", "logits"] and obj["images"]["n_used"] == 24
    assert obj["models"]["b"]["name"] == "cifar_resnet18" and len(obj["cka"][0]) == 2
    assert (out / "cka.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "args,message",
    [
        (["--layers-a", "layer7"], "no layer 'layer7'"),
        (["--batch-size", "2"], "at least 4"),
        (["--b-inputs", "aa"], "b_inputs must be 'clean' or one PGD attack"),
    ],
)
def test_analyze_cka_mistakes_are_one_line(run_dir, tmp_path, capsys, args, message):
    code = main(["analyze", "cka", str(run_dir), str(run_dir), "--n-examples", "8", "--out", str(tmp_path), *args])
    lines = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("notice:")]
    assert code == 2 and len(lines) == 1 and message in lines[0] and lines[0].startswith("cure-zoo analyze: error:")


def test_analyze_minpert_writes_per_model_json_and_the_figures(run_dir, tmp_path, capsys):
    out = tmp_path / "mp"
    args = ["analyze", "minpert", str(run_dir), "--n-examples", "6", "--iterations", "3", "--steps", "4"]
    assert main([*args, "--eps-max", "8/255", "--show", "3", "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "correct images flipped, median" in stdout
    obj = json.loads((out / "minpert_0.json").read_text())
    assert obj["method"]["kind"] == "bisect" and len(obj["per_image"]) == 6
    assert (out / "minpert_examples.png").is_file() and (out / "minpert_distribution.png").is_file()


def test_analyze_corruptions_needs_the_benchmark_on_disk(run_dir, tmp_path, capsys):
    code = main(["analyze", "corruptions", str(run_dir), "--data-dir", str(tmp_path), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "no CIFAR-10-C in" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()  # nothing written


def test_figure_legends_name_runs_by_their_folder_unless_two_folders_share_a_name(tmp_path):
    from cure_zoo.cli.cmd_analyze import _display_names

    (tmp_path / "a" / "cure").mkdir(parents=True)
    (tmp_path / "b" / "cure").mkdir(parents=True)
    (tmp_path / "w.safetensors").touch()
    at, w = str(tmp_path / "a" / "cure"), str(tmp_path / "w.safetensors")
    assert _display_names([at, w, "st_resnet18_cifar10.autoattack"]) == ["cure", "w", "st_resnet18_cifar10.autoattack"]
    both = [at, str(tmp_path / "b" / "cure")]
    assert _display_names(both) == both  # "cure" twice would hide which is which
