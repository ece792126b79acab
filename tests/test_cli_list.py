"""``cure-zoo list`` and the CLI's help and error conventions: in the test process through ``main()``, and once
as a real subprocess (the module entry point, marked slow)."""

import json
import subprocess
import sys

import pytest

from cure_zoo.cli.main import main


def cli(capsys, *args) -> tuple[int, str, str]:
    """Run ``cure-zoo ARGS`` in this process: (exit status, stdout, stderr)."""
    try:
        status = main(list(args))
    except SystemExit as stop:  # argparse's --help
        status = stop.code
    out = capsys.readouterr()
    return status, out.out, out.err


def test_list_table_has_every_model_and_params(capsys):
    status, out, err = cli(capsys, "list")
    assert status == 0, err
    for name in ["cure_resnet18_cifar10", "trades_wrn34_10_cifar100", "st_resnet18_cifar10.autoattack"]:
        assert name in out
    assert "46.16M" in out and "11.17M" in out


def test_list_json_is_machine_readable(capsys):
    _, out, _ = cli(capsys, "list", "cure_*", "--json")
    rows = json.loads(out)
    assert len(rows) == 10 and all(r["method"] == "cure" for r in rows)  # 8 paper pairs + 2 of the 5k track
    r18 = next(r for r in rows if r["name"] == "cure_resnet18_cifar10")
    assert r18["params"] == 11_173_962 and r18["published"] is False and r18["num_classes"] == 10
    assert not r18["small_scale"]
    small = next(r for r in rows if r["name"] == "cure_resnet18_w16_cifar10_5k")
    assert small["small_scale"] and small["params"] == 701_466 and "not the paper's models" in small["note"]


def test_list_marks_the_small_scale_models(capsys):
    status, out, err = cli(capsys, "list", "*_5k*")
    assert status == 0, err
    assert out.count("small scale*") == 6
    assert "* trained on 5,438 images at quarter width — not the paper's models" in out


def test_list_unknown_pattern_is_a_one_line_error(capsys):
    status, _, err = cli(capsys, "list", "nothing_*")
    assert status == 2
    assert err.strip().count("\n") == 0 and "Traceback" not in err


@pytest.mark.parametrize("args", [("--help",), ("list", "--help")])
def test_help(capsys, args):
    status, out, _ = cli(capsys, *args)
    assert status == 0 and "usage: cure-zoo" in out


@pytest.mark.slow
def test_the_module_entry_point_lists_and_exits_with_the_commands_status():
    listed = subprocess.run([sys.executable, "-m", "cure_zoo.cli.main", "list"], capture_output=True, text=True)
    assert listed.returncode == 0 and "cure_resnet18_cifar10" in listed.stdout, listed.stderr
    refused = subprocess.run(
        [sys.executable, "-m", "cure_zoo.cli.main", "list", "nothing_*"], capture_output=True, text=True
    )
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
