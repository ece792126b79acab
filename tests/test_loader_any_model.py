"""``load_model``/``cure-zoo eval`` for models outside the zoo: any timm name with ``--weights`` and a Python
factory ``package.module:function``, safetensors only, with one-line errors."""

import sys
import textwrap

import pytest
import timm
import torch

from cure_zoo.cli.main import main
from cure_zoo.errors import CureZooError
from cure_zoo.io import save_weights
from cure_zoo.models.loader import load_model
from tests.tiny_models import TINY_ARGS, tiny_model


@pytest.fixture
def factory_module(tmp_path, monkeypatch):
    """A user's own module on sys.path, defining a factory of the tiny architecture."""
    (tmp_path / "my_models.py").write_text(
        textwrap.dedent(
            f"""
            import timm
            import cure_zoo  # noqa: F401

            def tiny(num_classes=10):
                return timm.create_model("cifar_resnet18", widths={TINY_ARGS["widths"]}, num_classes=num_classes)

            def not_a_model():
                return 42
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("my_models", None)


def test_a_factory_with_safetensors_weights_gives_the_same_model(factory_module, tmp_path):
    reference = tiny_model()
    weights = save_weights(reference.state_dict(), tmp_path / "w.safetensors")
    loaded = load_model("my_models:tiny", weights=str(weights))
    assert loaded.name == "my_models:tiny" and loaded.weights_sha256 and not loaded.model.training
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), reference(x))


def test_any_timm_name_with_weights(tmp_path):
    reference = tiny_model()
    weights = save_weights(reference.state_dict(), tmp_path / "w.safetensors")
    loaded = load_model("cifar_resnet18", weights=str(weights), widths=TINY_ARGS["widths"])
    with torch.no_grad():
        x = torch.rand(1, 3, 32, 32)
        assert torch.equal(loaded.model(x), reference(x))
    assert timm.is_model("resnet18")  # a timm name from outside the zoo builds too (no weights: random init)
    assert load_model("resnet18", pretrained=False, num_classes=10).name == "resnet18"


def test_factory_and_weights_mistakes_are_one_clear_error(factory_module, tmp_path):
    torch.save({"x": torch.zeros(1)}, tmp_path / "w.pt")
    with pytest.raises(CureZooError, match="only .safetensors files"):
        load_model("my_models:tiny", weights=str(tmp_path / "w.pt"))
    with pytest.raises(CureZooError, match="cannot import 'no_such_module'"):
        load_model("no_such_module:f")
    with pytest.raises(CureZooError, match="has no function 'nope'"):
        load_model("my_models:nope")
    with pytest.raises(CureZooError, match="'os:getcwd' returned a str, not a torch nn.Module"):
        load_model("os:getcwd")
    with pytest.raises(CureZooError, match="raised TypeError"):
        load_model("my_models:tiny", num_classes="ten")
    with pytest.raises(CureZooError, match="returned a int, not a torch nn.Module"):
        load_model("my_models:not_a_model")
    wrong = save_weights(timm.create_model("cifar_resnet18_w16").state_dict(), tmp_path / "wrong.safetensors")
    with pytest.raises(CureZooError, match="do not fit my_models:tiny"):
        load_model("my_models:tiny", weights=str(wrong))
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(CureZooError, match="bad.safetensors is not a readable weights file"):
        load_model("my_models:tiny", weights=str(tmp_path / "bad.safetensors"))


def test_cli_eval_of_a_factory_model(factory_module, tmp_path, capsys):
    weights = save_weights(tiny_model().state_dict(), tmp_path / "w.safetensors")
    args = ["eval", "my_models:tiny", "--weights", str(weights), "--attacks", "nat", "--n-examples", "8"]
    assert main([*args, "--no-progress"]) == 0
    assert "my_models:tiny on 8 cifar10 test images" in capsys.readouterr().out
    assert main(["eval", "my_models:tiny", "--weights", str(tmp_path / "missing.safetensors"), "--no-progress"]) == 2
    assert "does not exist" in capsys.readouterr().err
