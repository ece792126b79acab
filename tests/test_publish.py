"""Cards, push (dry run, refusals, token handling) and verify (rules, tampering, corruption, resume) on a run
directory built here: a tiny real timm model, evaluated by the real engine on real bundled CIFAR-10 images.
(The end-to-end path through training and a real Hub server is tests/test_hub_e2e.py.)"""

import json
import re
import shutil

import pytest
import timm
import torch
import yaml

import cure_zoo  # noqa: F401
from cure_zoo.cli.main import main
from cure_zoo.errors import CureZooError
from cure_zoo.hub.card_builder import card_for_run
from cure_zoo.hub.push import push, upload_plan
from cure_zoo.hub.tolerance import judge_accuracy
from cure_zoo.hub.verify import verify
from cure_zoo.io import save_weights, sha256_file, write_json_atomic

N = 16
ATTACKS = "nat,pgd20,cw20"
FAKE_TOKEN = "hf_FAKEtokenNEVERtoBEprinted0123456789"


def make_run(directory, seed=0, evaluated=True):
    """A run directory per the contract (tiny ResNet-18, random init), evaluated on N real test images."""
    torch.manual_seed(seed)
    args = {"widths": [4, 8, 8, 8]}
    model = timm.create_model("cifar_resnet18", num_classes=10, **args)
    directory.mkdir(parents=True)
    save_weights(model.state_dict(), directory / "model.safetensors")
    sha = sha256_file(directory / "model.safetensors")
    config = {
        "architecture": "cifar_resnet18",
        "num_classes": 10,
        "num_features": 8,
        "model_args": dict(args, num_classes=10),
        "pretrained_cfg": {"input_size": [3, 32, 32], "mean": [0, 0, 0], "std": [1, 1, 1], "num_classes": 10},
        "cure_zoo": {"model_name": None, "method": "cure", "dataset": "cifar10", "weights_sha256": sha,
                     "recipe_name": "tiny_test", "recipe": {"name": "tiny_test", "method": "cure"}},
    }  # fmt: skip
    write_json_atomic(directory / "config.json", config)
    (directory / "train_hparams.yaml").write_text("name: tiny_test\nmethod: cure\n")
    records = [{"epoch": e, "eval": {"nat_acc": 10.0 + e, "pgd20_acc": 5.0 + e, "n": 32}} for e in (1, 2, 3)]
    (directory / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if not evaluated:
        return directory
    assert main(["eval", str(directory), "--attacks", ATTACKS, "--n-examples", str(N), "--batch-size", "8",
                 "--json", str(directory / "eval.json"), "--no-progress"]) == 0  # fmt: skip
    return directory


@pytest.fixture(scope="module")
def carded_run(tmp_path_factory):
    run = make_run(tmp_path_factory.mktemp("publish") / "run")
    card_for_run(run, hub_repo="test-org/tiny")
    return run


@pytest.fixture
def run(carded_run, tmp_path):
    """A private copy of the carded run, free to damage."""
    return shutil.copytree(carded_run, tmp_path / "run")


def _front_matter(text):
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


# ---------------------------------------------------------------------------------------------------------
# card


def test_card_writes_claims_eval_figures_and_an_honest_readme(carded_run):
    config = json.loads((carded_run / "config.json").read_text())
    claims = config["cure_zoo"]["claims"]
    evaluation = json.loads((carded_run / "eval.json").read_text())
    assert claims["weights_sha256"] == sha256_file(carded_run / "model.safetensors")
    assert claims["eval_sha256"] == sha256_file(carded_run / "eval.json")
    for key in ("nat", "pgd20", "cw20", "nrr_cw"):
        value = evaluation["results"][key]
        assert claims["results"][key] == (
            {k: v for k, v in value.items() if k != "time_s"} if isinstance(value, dict) else value
        )
    assert {p.name for p in (carded_run / "figures").iterdir()} == {"training_curves.png", "tradeoff.png"}
    assert (carded_run / "figures" / "tradeoff.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    readme = (carded_run / "README.md").read_text()
    meta = _front_matter(readme)
    assert meta["library_name"] == "timm" and meta["license"] == "apache-2.0"
    assert {"timm", "image-classification", "adversarial-robustness"} <= set(meta["tags"])
    (result,) = meta["model-index"][0]["results"]
    metrics = {m["name"]: m for m in result["metrics"]}
    assert set(metrics) == {"Nat", "PGD-20", "CW-inf", "NRR (CW-inf)"}
    assert all(m["verified"] is False for m in metrics.values()) and "verified: true" not in readme
    assert metrics["PGD-20"]["args"]["steps"] == 20 and metrics["PGD-20"]["args"]["eps"] == "8/255"
    assert metrics["Nat"]["args"]["n_examples"] == N
    nat = claims["results"]["nat"]
    row = f"| Nat | {nat['accuracy']:.2f} | [{nat['ci95'][0]:.2f}, {nat['ci95'][1]:.2f}] | {nat['correct']} / {N} |"
    assert row in readme
    assert 'timm.create_model("hf-hub:test-org/tiny", pretrained=True)' in readme and "import cure_zoo" in readme
    assert "reduced" in readme and "not the paper's architecture" in readme
    assert "reported in the paper" in readme and "arXiv:2401.14948" in readme and "CVPR 2019" in readme
    assert f"torch {torch.__version__}" in readme  # library versions of the measurement


def test_card_refuses_an_evaluation_of_other_weights(tmp_path, carded_run):
    other = make_run(tmp_path / "other", seed=1, evaluated=False)
    with pytest.raises(CureZooError, match="was measured on weights with sha256"):
        card_for_run(other, eval_path=carded_run / "eval.json")
    with pytest.raises(CureZooError, match="cure-zoo eval"):
        card_for_run(other)


# ---------------------------------------------------------------------------------------------------------
# push


def test_dry_run_prints_exact_files_sizes_hashes_and_never_the_token(run, capsys, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    assert main(["push", str(run), "--repo", "test-org/tiny", "--dry-run"]) == 0
    out = capsys.readouterr()
    listed = re.findall(r"^([0-9a-f]{64})\s+([\d,]+)\s+(\S+)$", out.out, flags=re.M)
    expected = ["model.safetensors", "config.json", "README.md", "eval.json", "train_hparams.yaml",
                "figures/tradeoff.png", "figures/training_curves.png"]  # fmt: skip
    assert [name for *_, name in listed] == expected  # the allow-list, nothing else (no metrics, checkpoints)
    for digest, size, name in listed:
        assert digest == sha256_file(run / name) and int(size.replace(",", "")) == (run / name).stat().st_size
    assert "nothing was sent" in out.out and "HF_TOKEN is set (not shown)" in out.out
    assert FAKE_TOKEN not in out.out + out.err
    assert not any(FAKE_TOKEN.encode() in p.read_bytes() for p in run.rglob("*") if p.is_file())


@pytest.mark.parametrize(
    "damage,message",
    [
        (lambda r: (r / "eval.json").unlink(), "lacks eval.json"),
        (lambda r: (r / "README.md").unlink(), "lacks README.md (the model card"),
        (lambda r: [(r / n).unlink() for n in ("model.safetensors", "config.json")], "model.safetensors (the weights"),
        (lambda r: (r / "model.safetensors").write_bytes(b"0" * 10), "the weights changed after the config"),
        (lambda r: (r / "eval.json").write_text((r / "eval.json").read_text() + " "), "run 'cure-zoo card"),
    ],
)
def test_push_refuses_incomplete_or_stale_runs_naming_what_is_wrong(run, capsys, damage, message):
    damage(run)
    assert main(["push", str(run), "--repo", "test-org/tiny", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_push_without_token_or_offline_sends_nothing_and_says_why(run, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)  # and HF_HOME is an empty test folder: no login either
    with pytest.raises(CureZooError, match="no Hugging Face token"):
        push(run, "test-org/tiny")
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    with pytest.raises(CureZooError, match="HF_HUB_OFFLINE=1 is set") as info:
        push(run, "test-org/tiny")  # this test process is offline (conftest)
    assert FAKE_TOKEN not in str(info.value)
    with pytest.raises(CureZooError, match="not a Hub repo id"):
        push(run, "not a repo", dry_run=True)


def test_upload_plan_is_the_allow_list(run):
    (run / "checkpoint.pt").write_bytes(b"x")
    (run / "figures" / "notes.txt").write_text("x")
    names = [f.path_in_repo for f in upload_plan(run)]
    assert "checkpoint.pt" not in names and "metrics.jsonl" not in names and "figures/notes.txt" not in names


# ---------------------------------------------------------------------------------------------------------
# verify


def test_verify_same_images_passes_and_writes_a_report(run, capsys, tmp_path):
    out_json = tmp_path / "verify.json"
    assert main(["verify", str(run), "--no-progress", "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^nat\s+\S+\s+\S+\s+16\s+PASS\s+same images", out, flags=re.M)
    assert "all 5 claims hold" in out
    report = json.loads(out_json.read_text())
    assert report["all_hold"] and report["mode"] == "same images"
    # same machine, same settings: every image agrees with the claim's record (README: "0 differing images")
    assert all("; 0 images differ from the record" in v["detail"] for v in report["verdicts"][:4])
    assert [v["metric"] for v in report["verdicts"]] == ["nat", "pgd20", "cw20", "worst", "nrr_cw"]


def test_verify_on_a_subset_uses_the_record_and_the_interval(run, capsys):
    assert main(["verify", str(run), "--n-examples", "8", "--attacks", "nat,pgd20", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "subset: record within 1 image(s) and claim inside 99% interval" in out
    assert "worst" not in out  # a worst case over fewer attacks is another quantity


def _tamper(run, edit):
    config = json.loads((run / "config.json").read_text())
    edit(config["cure_zoo"]["claims"]["results"])
    (run / "config.json").write_text(json.dumps(config))


def test_a_tampered_claim_fails_with_exit_1(run, capsys):
    def raise_nat(results):
        nat = results["nat"]
        nat["correct"] = min(N, nat["correct"] + 3)
        nat["accuracy"] = 100 * nat["correct"] / N

    _tamper(run, raise_nat)
    assert main(["verify", str(run), "--attacks", "nat", "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert re.search(r"^nat .* FAIL .*per-image record has", out, flags=re.M) and "NOT VERIFIED: nat" in out


def test_a_tampered_derived_number_fails(run, capsys):
    _tamper(run, lambda results: results.update(nrr_cw=results["nrr_cw"] + 5))
    assert main(["verify", str(run), "--attacks", "nat,cw20", "--no-progress"]) == 1
    assert re.search(r"^nrr_cw .* FAIL", capsys.readouterr().out, flags=re.M)


def test_bad_input_exits_2_with_one_line(run, capsys):
    cases = [
        (["--attacks", "aa"], "aa not claimed"),
        (["--n-examples", "17"], "between 1 and the claim's 16 images"),
    ]
    for extra, message in cases:
        assert main(["verify", str(run), "--no-progress", *extra]) == 2
        err = capsys.readouterr().err
        assert message in err
    (run / "eval.json").write_text((run / "eval.json").read_text().replace('"nat"', '"nat" ', 1))
    assert main(["verify", str(run), "--no-progress"]) == 2
    assert "is not the evaluation the claims cite" in capsys.readouterr().err
    data = bytearray((run / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (run / "model.safetensors").write_bytes(bytes(data))
    assert main(["verify", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "is corrupted or not the published file" in err and "nothing was loaded" in err


def test_verify_resumes_after_an_interruption(run, tmp_path, stop_at_second_chunk):
    calls = stop_at_second_chunk
    state = tmp_path / "state"
    with pytest.raises(KeyboardInterrupt):
        verify(str(run), attacks=["nat", "pgd20"], chunk_size=8, state_root=state, progress=False, log=lambda m: None)
    assert len(list(state.rglob("chunk_*.json"))) == 1  # the finished chunk was kept

    calls.clear()
    report = verify(str(run), attacks=["nat", "pgd20"], chunk_size=8, state_root=state, progress=False,
                    log=lambda m: None)  # fmt: skip
    assert calls == [list(range(8, 16))]  # only the unfinished chunk was measured
    assert report.passed and not any(state.iterdir())  # state removed after a complete run
    claimed = json.loads((run / "eval.json").read_text())["masks"]  # one uninterrupted run, same settings
    assert {k: report.measured["masks"][k] for k in ("nat", "pgd20")} == {k: claimed[k] for k in ("nat", "pgd20")}


def test_subset_rule_uses_a_binomial_interval():
    claim = {"accuracy": 50.0, "correct": 500, "n": 1000}
    ones = lambda k, n: torch.tensor([True] * k + [False] * (n - k))  # noqa: E731
    # no per-image record: the claim must fall inside the widened 99% Wilson interval of k/n
    assert judge_accuracy("nat", claim, None, None, ones(45, 100), same_images=False).passed
    assert not judge_accuracy("nat", claim, None, None, ones(30, 100), same_images=False).passed
    assert not judge_accuracy("nat", claim, None, None, ones(70, 100), same_images=False).passed
    # an internally inconsistent claim fails whatever is measured
    bad = dict(claim, accuracy=55.0)
    assert judge_accuracy("nat", bad, None, None, ones(50, 100), same_images=False).rule == "claim consistency"


# ---------------------------------------------------------------------------------------------------------
# the norm of a claim


@pytest.fixture(scope="module")
def l2_run(tmp_path_factory):
    """A run evaluated under L2, with claims written from that evaluation (as another tool might)."""
    from cure_zoo.hub.claims import claims_from_eval

    run = make_run(tmp_path_factory.mktemp("l2") / "run", evaluated=False)
    assert main(["eval", str(run), "--attacks", "nat,pgd20", "--norm", "L2", "--eps", "0.25", "--n-examples",
                 str(N), "--batch-size", "8", "--json", str(run / "eval.json"), "--no-progress"]) == 0  # fmt: skip
    from cure_zoo.evaluation import EvalResult

    config = json.loads((run / "config.json").read_text())
    claims = claims_from_eval(EvalResult.load(run / "eval.json"), eval_sha256=sha256_file(run / "eval.json"))
    config["cure_zoo"]["claims"] = claims
    write_json_atomic(run / "config.json", config)
    return run


def test_an_l2_claim_is_re_measured_under_l2(l2_run, capsys, tmp_path):
    out_json = tmp_path / "verify.json"
    assert main(["verify", str(l2_run), "--no-progress", "--json", str(out_json)]) == 0
    assert "; 0 images differ from the record" in capsys.readouterr().out
    measured = json.loads(out_json.read_text())["measured"]["protocol"]
    assert measured["norm"] == "L2" and measured["eps"] == 0.25 and measured["attacks"]["pgd20"]["norm"] == "L2"


def test_verify_refuses_a_re_measurement_under_another_norm(run, capsys, monkeypatch):
    import cure_zoo.hub.verify as verify_module

    real = verify_module.evaluate_chunked
    monkeypatch.setattr(verify_module, "evaluate_chunked", lambda *a, **k: real(*a, **dict(k, norm="L2")))
    assert main(["verify", str(run), "--attacks", "nat,pgd20", "--no-progress"]) == 2
    last = capsys.readouterr().err.splitlines()[-1]  # after verify's progress lines: the error, one line
    assert last.startswith("cure-zoo verify: error: the claims in") and "were measured under Linf, but the " \
        "re-measurement ran under L2" in last  # fmt: skip


def test_a_claim_whose_attacks_disagree_on_the_norm_is_refused(run, capsys):
    config = json.loads((run / "config.json").read_text())
    config["cure_zoo"]["claims"]["protocol"]["norm"] = "L2"  # the attacks still say Linf
    (run / "config.json").write_text(json.dumps(config))
    assert main(["verify", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "attack pgd20 ran under Linf but the protocol says L2" in err  # before any work


def test_the_card_refuses_an_evaluation_under_another_norm(l2_run):
    with pytest.raises(CureZooError, match="was measured under L2, but a model card states Linf results"):
        card_for_run(l2_run)
