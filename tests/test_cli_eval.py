"""``cure-zoo eval``: the table and JSON, one-line errors with exit status 2, and a 2-process torchrun (gloo,
CPU) run whose per-sample masks equal a single process's."""

import json
import os
import socket
import subprocess
import sys

import pytest
import timm
import torch
import torch.nn as nn
from timm.models import register_model

from cure_zoo.cli.main import main
from cure_zoo.evaluation import EvalResult, evaluate
from tests.tiny_models import save_run_dir

COMMON = ["--attacks", "nat,pgd20", "--eps", "1/255", "--no-progress"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return save_run_dir(tmp_path_factory.mktemp("tiny_run"))


def test_eval_prints_a_table_and_writes_the_json(run_dir, tmp_path, capsys):
    out = tmp_path / "res" / "eval.json"
    assert main(["eval", str(run_dir), *COMMON, "--n-examples", "8", "--batch-size", "5", "--json", str(out)]) == 0
    stdout, stderr = capsys.readouterr()
    assert "pgd20" in stdout and "95% CI" in stdout and f"wrote {out}" in stdout
    assert stderr.count("notice:") == 1 and "test indices 0-7" in stderr  # the bundled-images notice, once
    result = EvalResult.load(out)
    data = json.loads(out.read_text())
    assert data["schema"] == "cure_zoo.eval/1" and data["dataset"]["indices"] == [[0, 8]]
    assert (
        data["model"]["weights_sha256"]
        == json.loads((run_dir / "config.json").read_text())["cure_zoo"]["weights_sha256"]
    )
    assert data["protocol"]["batch_size"] == 5 and data["protocol"]["attacks"]["pgd20"]["eps"] == 1 / 255
    assert result.results["nat"]["n"] == 8 and set(result.masks) == {"nat", "pgd20", "worst"}
    assert [p.name for p in out.parent.iterdir()] == ["eval.json"]  # atomic write: no temporary left behind
    # TF32 off unless --allow-tf32 (it changes CUDA convolutions' bits), and the settings are recorded
    numerics = data["protocol"]["numerics"]
    assert numerics["cudnn_allow_tf32"] is False and numerics["matmul_allow_tf32"] is False
    assert numerics["float32_matmul_precision"] == "highest" and "cudnn_benchmark" in numerics


@register_model
def _test_probability_model(pretrained=False, **kwargs):
    """Registered only for this test: a tiny classifier that ends in a softmax (a common user mistake)."""
    inner = timm.create_model("cifar_resnet18", widths=(4, 4, 4, 4))
    model = nn.Sequential(inner, nn.Softmax(dim=1))
    model.pretrained_cfg = inner.pretrained_cfg
    return model


@pytest.mark.parametrize(
    "args,message",
    [
        (["--eps", "8"], "did you mean 8/255"),
        (["--attacks", "nat,fgsm"], "unknown attack 'fgsm'; choose from: nat, pgd20, pgd100, cw20, aa, sweep"),
        (["--dataset", "mnist"], "unknown dataset 'mnist'; choose one of: cifar10, cifar100, svhn"),
        (["--n-examples", "5000"], "asked for 5000 cifar10 test images but"),
        (["--dataset", "svhn"], "no svhn images ship with the package"),
        (["--device", "tpu"], "unknown device 'tpu'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(run_dir, capsys, args, message):
    assert main(["eval", str(run_dir), "--attacks", "nat", "--no-progress", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("cure-zoo eval: error: ") and message in err


@pytest.mark.parametrize(
    "argv,message",
    [
        (["eval", "m", "--memory-format", "nhwc"], "argument --memory-format: invalid choice: 'nhwc'"),
        (["eval", "m", "--batch-size", "many"], "argument --batch-size: must be a positive integer, got 'many'"),
        (["eval", "m", "--n-examples", "0"], "argument --n-examples: must be positive, got 0"),
        (["verify", "m", "--chunk-size", "-3"], "argument --chunk-size: must be positive, got -3"),
        (["analyze", "cka", "a", "b", "--out", "o", "--n-examples", "0"], "argument --n-examples: must be positive"),
        (["evl"], "argument COMMAND: invalid choice: 'evl'"),
        (["eval"], "the following arguments are required: MODEL"),
    ],
)
def test_usage_mistakes_are_one_line_and_exit_2(capsys, argv, message):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err and "--help')" in err


def test_a_model_that_outputs_probabilities_is_refused(capsys):
    assert main(["eval", "_test_probability_model", "--attacks", "nat", "--n-examples", "4", "--no-progress"]) == 2
    assert "outputs probabilities" in capsys.readouterr().err


def test_unknown_model_is_one_line(capsys):
    assert main(["eval", "cure_resnet_18_cifar10", "--attacks", "nat"]) == 2
    assert "did you mean" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_torchrun_gives_the_same_masks_as_one_process(run_dir, tmp_path, cifar10_test):
    """torchrun, 2 CPU processes, gloo: each takes a contiguous slice (11 images, so 5 + 6), rank 0 writes one
    JSON; its per-sample masks must equal a single-process evaluate() of the same model and images."""
    out = tmp_path / "sharded.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
           "-m", "cure_zoo.cli.main", "eval", str(run_dir), "--attacks", "nat,pgd20,cw20", "--eps", "1/255",
           "--n-examples", "11", "--batch-size", "4", "--device", "cpu", "--no-progress",
           "--json", str(out)]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sharded = EvalResult.load(out)
    assert sharded.protocol["world_size"] == 2 and sharded.indices == list(range(11))
    single = evaluate(str(run_dir), cifar10_test.take(11), "nat,pgd20,cw20", eps="1/255", batch_size=11,
                      progress=False)  # fmt: skip
    assert sharded.differing_samples(single) == {k: 0 for k in single.masks}
    nat, pgd = single.mask("nat"), single.mask("pgd20")
    assert int(pgd.sum()) > 0 and int((nat & ~pgd).sum()) > 0  # mixed outcomes: the comparison can fail
    assert proc.stdout.count("wrote ") == 1  # only rank 0 reports
    torch.testing.assert_close(sharded.results["nat"]["accuracy"], single.results["nat"]["accuracy"])
