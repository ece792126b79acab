"""End to end against a real Hub server (olah on 127.0.0.1): train -> eval -> card -> push --dry-run -> push
-> the Hub serves exactly the dry run's bytes -> download bit-identical -> verify passes; a tampered claim fails
(exit 1); corrupted weights are refused (exit 2); a push to olah itself fails cleanly (olah is read-only); the
token never appears in any output or file.

Two models go through it:

* the training smoke recipe, shrunk further (tiny widths, 128 images, 1 natural + 1 CURE epoch) so it runs in
  seconds. It is a reduced ResNet-18, so no registered name builds its architecture; it is loaded as a user
  would load such a repo, ``hf-hub:ORG/NAME`` (timm rebuilds it from config.json's model_args). Publishing it
  under a registered name like ``cure_resnet18_cifar10`` would be a lie: that name builds the full model.
  It is published by a real ``cure-zoo push`` (huggingface_hub's create_repo/create_commit) to
  :class:`HubWriteAPI`, a labelled FAKE of the Hub's write API (no upload-capable server exists for loopback),
  which commits what it receives into olah's mirrors; olah then serves it.
* the real AutoAttack ResNet-18 (naturally trained, CIFAR-10), published as ``st_resnet18_cifar10`` in the
  test org, which is what it is: its dry-run file list is committed as a git repo under olah's mirrors, and with
  ``CURE_ZOO_HF_ORG`` set, the registered name resolves to that repo.

Hub steps run in subprocesses (huggingface_hub reads HF_ENDPOINT at import; this process is offline).
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cure_zoo.cli.main import main
from cure_zoo.io import save_weights, sha256_file, write_json_atomic

from .hub_server import HubWriteAPI, OlahServer, contract_config, run_cli, run_python

pytestmark = pytest.mark.slow  # a real Hub server, training and CLI subprocesses end to end

ROOT = Path(__file__).resolve().parents[1]
ORG = "test-org"
FAKE_TOKEN = "hf_e2eFAKEtokenThatMustNeverAppear0000"
N_IMAGES = 16
TINY = [
    "model.args={widths: [4, 8, 8, 8]}",
    "data.train_examples=128",
    "optim.epochs=2",
    "optim.milestones=[2]",
    "cure.natural_warmup_epochs=1",
    "eval.examples=16",
    "eval.batch_size=16",
    "checkpoint.every_steps=0",
    "run.progress=false",
    "run.tensorboard=false",
]


def _publish_listed(server, name, run_dir, listed, **replace) -> None:
    files = {path: run_dir / path for path, _, _ in listed}
    files.update(replace)
    server.publish(ORG, name, files)


HUB_SESSION = """
import contextlib, io, json, sys, torch, timm, cure_zoo
from huggingface_hub import HfApi
from safetensors.torch import load_file
from cure_zoo.cli.main import main
args = json.loads(sys.argv[1])
from pathlib import Path
from huggingface_hub import snapshot_download
from cure_zoo.io import sha256_file
snap = Path(snapshot_download(args["repo"]))
out = {"files": {p.relative_to(snap).as_posix(): [p.stat().st_size, sha256_file(p)]
                 for p in snap.rglob("*") if p.is_file()},
       "listed": sorted(HfApi().list_repo_files(args["repo"]))}
def same(spec, ref):
    sd, ref = timm.create_model(spec, pretrained=True).state_dict(), load_file(ref)
    return sorted(sd) == sorted(ref) and all(torch.equal(sd[k], v) for k, v in ref.items())
out["smoke_identical"] = same("hf-hub:" + args["repo"], args["smoke_weights"])
out["registered_identical"] = same("st_resnet18_cifar10", args["r18_weights"])
def cli(*argv):
    o, e = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(o), contextlib.redirect_stderr(e):
        rc = main(list(argv))
    return {"rc": rc, "out": o.getvalue(), "err": e.getvalue()}
out["verify"] = cli("verify", "hf-hub:" + args["repo"], "--no-progress")
out["verify_registered"] = cli("verify", "st_resnet18_cifar10", "--no-progress")
out["verify_tampered"] = cli("verify", "hf-hub:" + args["repo"] + "-tampered", "--no-progress")
out["verify_corrupt"] = cli("verify", "hf-hub:" + args["repo"] + "-corrupt", "--no-progress")
out["push"] = cli("push", args["run"], "--repo", args["org"] + "/brand-new")
print("RESULT" + json.dumps(out))
"""


@pytest.fixture(scope="module")
def e2e(tmp_path_factory, autoattack_resnet18):
    """Build, card and publish both models, then run every Hub-side step in one online subprocess."""
    root = tmp_path_factory.mktemp("e2e")
    capture = pytest.MonkeyPatch()
    capture.setenv("HF_TOKEN", FAKE_TOKEN)

    # 1. the training smoke recipe (the trainer's own CLI), shrunk; one thread: tiny convs are overhead-bound
    smoke = root / "smoke_run"
    cmd = [sys.executable, str(ROOT / "recipes" / "train.py"), "--recipe", "smoke_cure_cifar10", "--output", str(smoke)]
    cmd += [a for kv in TINY for a in ("--set", kv)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]

    # 2. the real AutoAttack ResNet-18 as a run directory of st_resnet18_cifar10 (no training log: none exists)
    r18 = root / "r18_run"
    save_weights(autoattack_resnet18.state_dict(), r18 / "model.safetensors")
    write_json_atomic(
        r18 / "config.json",
        contract_config(
            "cifar_resnet18",
            sha256_file(r18 / "model.safetensors"),
            model_name="st_resnet18_cifar10",
            method="st",
            dataset="cifar10",
        ),
    )
    (r18 / "train_hparams.yaml").write_text("# weights from pyautoattack/examples/model_test.pt\n")

    server = OlahServer(root / "olah").start()
    listings = {}
    try:
        for run_dir, repo, n in ((smoke, f"{ORG}/cure-smoke", N_IMAGES), (r18, f"{ORG}/st_resnet18_cifar10", 8)):
            assert (
                main(
                    [
                        "eval",
                        str(run_dir),
                        "--attacks",
                        "nat,pgd20",
                        "--n-examples",
                        str(n),
                        "--batch-size",
                        str(n),
                        "--json",
                        str(run_dir / "eval.json"),
                        "--no-progress",
                    ]
                )
                == 0
            )
            assert main(["card", str(run_dir), "--repo", repo]) == 0
        capsys_out = _CapturingPrint()
        for run_dir, repo in ((smoke, f"{ORG}/cure-smoke"), (r18, f"{ORG}/st_resnet18_cifar10")):
            listings[repo] = capsys_out.dry_run(run_dir, repo)
        # the ResNet-18: exactly the dry run's files, committed as a git repo under olah's mirrors
        _publish_listed(server, "st_resnet18_cifar10", r18, listings[f"{ORG}/st_resnet18_cifar10"])
        # the smoke run: a real `cure-zoo push` through huggingface_hub, to the write-API fake, which commits
        # what it receives into olah's mirrors (olah itself refuses writes)
        writer = HubWriteAPI(server, FAKE_TOKEN).start()
        try:
            push_env = server.client_env(root / "hf-push", HF_ENDPOINT=writer.endpoint, HF_TOKEN=FAKE_TOKEN)
            pushed = run_cli(["push", str(smoke), "--repo", f"{ORG}/cure-smoke"], push_env)
        finally:
            writer.stop()

        # a tampered card: the claimed clean accuracy raised by 2 images, consistently in number and count
        config = json.loads((smoke / "config.json").read_text())
        nat = config["cure_zoo"]["claims"]["results"]["nat"]
        nat["correct"] = min(N_IMAGES, nat["correct"] + 2)
        nat["accuracy"] = 100.0 * nat["correct"] / N_IMAGES
        tampered = json.dumps(config, indent=2).encode()
        _publish_listed(
            server, "cure-smoke-tampered", smoke, listings[f"{ORG}/cure-smoke"], **{"config.json": tampered}
        )
        # corrupted weights: the file cut short, the config still publishing the real sha256
        cut = (smoke / "model.safetensors").read_bytes()[:-4096]
        _publish_listed(
            server, "cure-smoke-corrupt", smoke, listings[f"{ORG}/cure-smoke"], **{"model.safetensors": cut}
        )

        args = {
            "repo": f"{ORG}/cure-smoke",
            "org": ORG,
            "run": str(smoke),
            "smoke_weights": str(smoke / "model.safetensors"),
            "r18_weights": str(r18 / "model.safetensors"),
        }
        env = server.client_env(root / "hf", CURE_ZOO_HF_ORG=ORG, HF_TOKEN=FAKE_TOKEN)
        proc = run_python(HUB_SESSION, env, json.dumps(args), timeout=600)
        assert proc.returncode == 0, proc.stderr[-4000:]
        result = json.loads([x for x in proc.stdout.splitlines() if x.startswith("RESULT")][-1][len("RESULT") :])
        yield {
            "result": result,
            "listings": listings,
            "smoke": smoke,
            "r18": r18,
            "root": root,
            "pushed": pushed,
            "writer": writer,
            "session_output": proc.stdout + proc.stderr + pushed.stdout + pushed.stderr,
            "server_log": server.log_text(),
        }
    finally:
        server.stop()
        capture.undo()


class _CapturingPrint:
    """``cure-zoo push --dry-run`` with its printed output captured (a module fixture cannot use capsys)."""

    def dry_run(self, run_dir, repo):
        import contextlib
        import io

        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            assert main(["push", str(run_dir), "--repo", repo, "--dry-run"]) == 0
        out = buf.getvalue()
        assert "nothing was sent" in out and FAKE_TOKEN not in out
        return [
            (name, int(size.replace(",", "")), digest)
            for digest, size, name in re.findall(r"^([0-9a-f]{64})\s+([\d,]+)\s+(\S+)$", out, flags=re.M)
        ]


def test_push_sends_exactly_the_dry_run_upload_in_one_commit(e2e):
    pushed, writer = e2e["pushed"], e2e["writer"]
    assert pushed.returncode == 0, pushed.stderr
    assert re.search(r"pushed 7 files to test-org/cure-smoke in one commit [0-9a-f]{40}", pushed.stdout)
    # the record that pins it in published.json: the new commit and the card's headline numbers
    claims = json.loads((e2e["smoke"] / "config.json").read_text())["cure_zoo"]["claims"]["results"]
    oid = re.search(r"in one commit ([0-9a-f]{40})", pushed.stdout).group(1)
    record = json.loads(pushed.stdout.split("published.json: ")[1])
    assert record == {
        "<model name>": {"revision": oid, "claims": {k: round(v["accuracy"], 2) for k, v in claims.items()}}
    }
    listed = e2e["listings"][f"{ORG}/cure-smoke"]
    names = sorted(name for name, _, _ in listed)
    assert {
        "model.safetensors",
        "config.json",
        "README.md",
        "eval.json",
        "train_hparams.yaml",
        "figures/training_curves.png",
        "figures/tradeoff.png",
    } == set(names)
    assert [c["files"] for c in writer.commits] == [names]  # ONE commit, the allow-list
    assert [c["path"].split("/")[-2] if "/models/" in c["path"] else c["path"] for c in writer.calls] == [
        "/api/repos/create",
        "/api/validate-yaml",
        "preupload",
        "commit",
    ]
    assert all(c["authorized"] for c in writer.calls)  # the token from HF_TOKEN went to the server, only there
    # what the Hub then serves is byte for byte what the dry run listed
    served = e2e["result"]["files"]
    assert served == {name: [size, digest] for name, size, digest in listed}
    assert e2e["result"]["listed"] == names


def test_download_is_bit_identical_and_verify_passes(e2e):
    r = e2e["result"]
    assert r["smoke_identical"] and r["registered_identical"]
    for key in ("verify", "verify_registered"):
        v = r[key]
        assert v["rc"] == 0, v
        assert re.search(r"^nat\s.*PASS\s+same images", v["out"], flags=re.M), v["out"]
        assert "all 3 claims hold" in v["out"]  # nat, pgd20 and their worst case


def test_a_tampered_claim_fails_verification(e2e):
    v = e2e["result"]["verify_tampered"]
    assert v["rc"] == 1, v
    assert re.search(r"^nat\s.*FAIL", v["out"], flags=re.M) and re.search(r"^pgd20\s.*PASS", v["out"], flags=re.M)


def test_corrupted_weights_are_refused_with_exit_2(e2e):
    v = e2e["result"]["verify_corrupt"]
    assert v["rc"] == 2, v
    assert "cure-smoke-corrupt/model.safetensors is corrupted" in v["err"] and "nothing was loaded" in v["err"]
    assert v["err"].count("\n") == 1 and "Traceback" not in v["err"]


def test_a_real_push_reaches_the_server_and_fails_cleanly_without_leaking_the_token(e2e):
    v = e2e["result"]["push"]
    assert v["rc"] == 2, v
    assert "push to test-org/brand-new failed to create the repository: HTTP" in v["err"]
    assert "nothing was committed" in v["err"] and "Traceback" not in v["err"]
    assert "POST /api/repos/create" in e2e["server_log"]  # it really went through huggingface_hub to the server
    assert FAKE_TOKEN not in e2e["session_output"]
    # nothing the client side wrote holds it (the run directories, the HF cache); the server may log what it got
    written = [p for d in ("smoke_run", "r18_run", "hf") for p in (e2e["root"] / d).rglob("*") if p.is_file()]
    assert written and not [p for p in written if FAKE_TOKEN.encode() in p.read_bytes()]
