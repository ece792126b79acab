"""Pretrained download against a real Hub server (olah on 127.0.0.1): registered names and ``hf-hub:`` ids
return bit-identical weights, sha256-checked against the published config.json; a truncated file on the
server or in the cache is a clear error and nothing is loaded; HF_HUB_OFFLINE=1 loads from the HF cache.

Each Hub step runs in a subprocess, because huggingface_hub reads HF_ENDPOINT/HF_HUB_OFFLINE at import and this
test process is pinned offline (tests/conftest.py)."""

import json

import pytest
import timm
import torch

import cure_zoo  # noqa: F401
from cure_zoo.errors import WeightsIntegrityError
from cure_zoo.io import save_weights, sha256_file

from .hub_server import OlahServer, contract_config, run_python

pytestmark = pytest.mark.slow  # a real Hub server (olah) end to end

ORG = "test-org"
NAME = "st_resnet18_cifar10"  # the real AutoAttack ResNet-18 IS a naturally trained CIFAR-10 ResNet-18


@pytest.fixture(scope="module")
def hub(tmp_path_factory, autoattack_resnet18):
    root = tmp_path_factory.mktemp("hub")
    weights = root / "model.safetensors"
    save_weights(autoattack_resnet18.state_dict(), weights)
    sha = sha256_file(weights)
    config = contract_config("cifar_resnet18", sha, model_name=NAME, method="st", dataset="cifar10")
    config = json.dumps(config, indent=2).encode()
    data = weights.read_bytes()
    server = OlahServer(root / "olah").start()
    try:
        server.publish(ORG, NAME, {"config.json": config, "model.safetensors": data, "README.md": b"# test\n"})
        # a server-side truncated upload: the config publishes the real file's sha256
        server.publish(ORG, "truncated", {"config.json": config, "model.safetensors": data[: len(data) // 2]})
        yield server, weights, sha
    finally:
        server.stop()


LOAD = """
import json, sys, timm, torch, cure_zoo
from safetensors.torch import load_file
from cure_zoo.models.loader import load_model
ref = load_file(sys.argv[1])
def same(model):
    sd = model.state_dict()
    return sorted(sd) == sorted(ref) and all(torch.equal(sd[k], v) for k, v in ref.items())
def attempt(spec):
    try:
        return {"identical": same(timm.create_model(spec, pretrained=True))}
    except cure_zoo.CureZooError as err:
        return {"error": type(err).__name__, "message": str(err)}
out = {spec: attempt(spec) for spec in sys.argv[2:]}
try:
    out["load_model_sha256"] = load_model("hf-hub:test-org/st_resnet18_cifar10").weights_sha256
except cure_zoo.CureZooError as err:
    out["load_model_sha256"] = type(err).__name__
"""


def _run(code: str, env: dict, *args: str) -> dict:
    """Run ``code`` (which fills ``out``) in a subprocess and return ``out``."""
    proc = run_python(code + "\nprint('RESULT' + json.dumps(out))", env, *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT") :])


def test_download_is_bit_identical_checked_and_works_offline_from_the_cache(hub, tmp_path):
    server, weights, sha = hub
    hf_home = tmp_path / "hf"
    online = server.client_env(hf_home, CURE_ZOO_HF_ORG=ORG)
    out = _run(LOAD, online, str(weights), NAME, f"hf-hub:{ORG}/{NAME}", f"hf-hub:{ORG}/truncated")
    # a registered name resolves to $CURE_ZOO_HF_ORG/<name>; both paths give the published bytes exactly
    assert out[NAME] == {"identical": True}
    assert out[f"hf-hub:{ORG}/{NAME}"] == {"identical": True}
    assert out["load_model_sha256"] == sha
    bad = out[f"hf-hub:{ORG}/truncated"]
    assert bad["error"] == "WeightsIntegrityError"
    assert "test-org/truncated/model.safetensors is corrupted" in bad["message"]
    assert "nothing was loaded" in bad["message"] and "\n" not in bad["message"]

    # Offline: the same cache serves both names with no server involved (HF_ENDPOINT points at a closed port).
    offline = server.client_env(hf_home, CURE_ZOO_HF_ORG=ORG, HF_HUB_OFFLINE="1", HF_ENDPOINT="http://127.0.0.1:9")
    out = _run(LOAD, offline, str(weights), NAME, f"hf-hub:{ORG}/{NAME}")
    assert out[NAME] == {"identical": True} and out[f"hf-hub:{ORG}/{NAME}"] == {"identical": True}

    # A cached file damaged after download (disk error, interrupted copy) is caught before loading.
    (blob,) = [p for p in (hf_home / "hub" / f"models--{ORG}--{NAME}" / "blobs").iterdir() if p.stat().st_size > 1e6]
    blob.write_bytes(blob.read_bytes()[:-1000])
    out = _run(LOAD, offline, str(weights), NAME)
    assert out[NAME]["error"] == "WeightsIntegrityError" and "nothing was loaded" in out[NAME]["message"]
    assert out["load_model_sha256"] == "WeightsIntegrityError"


def test_published_repo_loads_with_timms_local_dir_and_is_checked(hub, autoattack_resnet18):
    """The config.json written for the Hub is timm's format: ``local-dir:`` on the repo's folder loads it, and the
    zoo checks the weights' sha256 there too."""
    server, _, _ = hub
    model = timm.create_model(f"local-dir:{server.repo_dir(ORG, NAME)}", pretrained=True)
    assert torch.equal(model.linear.weight, autoattack_resnet18.linear.weight)
    with pytest.raises(WeightsIntegrityError, match="truncated/model.safetensors is corrupted"):
        timm.create_model(f"local-dir:{server.repo_dir(ORG, 'truncated')}", pretrained=True)
