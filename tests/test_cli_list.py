"""``cure-zoo list`` and the CLI's help and error conventions, run as a real subprocess."""

import json
import subprocess
import sys

import pytest


def cli(*args):
    return subprocess.run([sys.executable, "-m", "cure_zoo.cli.main", *args], capture_output=True, text=True)


def test_list_table_has_every_model_and_params():
    out = cli("list")
    assert out.returncode == 0, out.stderr
    for name in ["cure_resnet18_cifar10", "trades_wrn34_10_cifar100", "st_resnet18_cifar10.autoattack"]:
        assert name in out.stdout
    assert "46.16M" in out.stdout and "11.17M" in out.stdout


def test_list_json_is_machine_readable():
    out = cli("list", "cure_*", "--json")
    rows = json.loads(out.stdout)
    assert len(rows) == 10 and all(r["method"] == "cure" for r in rows)  # 8 paper pairs + 2 of the 5k track
    r18 = next(r for r in rows if r["name"] == "cure_resnet18_cifar10")
    assert r18["params"] == 11_173_962 and r18["published"] is False and r18["num_classes"] == 10
    assert not r18["small_scale"]
    small = next(r for r in rows if r["name"] == "cure_resnet18_w16_cifar10_5k")
    assert small["small_scale"] and small["params"] == 701_466 and "not the paper's models" in small["note"]


def test_list_marks_the_small_scale_models():
    out = cli("list", "*_5k*")
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("small scale*") == 6
    assert "* trained on 5,438 images at quarter width — not the paper's models" in out.stdout


def test_list_unknown_pattern_is_a_one_line_error():
    out = cli("list", "nothing_*")
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "Traceback" not in out.stderr


@pytest.mark.parametrize("args", [("--help",), ("list", "--help")])
def test_help(args):
    out = cli(*args)
    assert out.returncode == 0 and "usage: cure-zoo" in out.stdout
