"""The zoo's one weight writer: the same tensors give the same bytes in any process (so the same sha256 in
config.json and on the Hub), the file stays a valid safetensors file, and a failed write leaves nothing."""

import subprocess
import sys

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from cure_zoo.io import save_weights, sha256_file

_WRITE = """
import sys, torch
from cure_zoo.io import save_weights
g = torch.Generator().manual_seed(0)
tensors = {f"layer{i}.weight": torch.randn(3, 4, generator=g) for i in range(12)}
tensors["step"] = torch.tensor(7)
save_weights(tensors, sys.argv[1], metadata={f"key{i}": f"value {i} \u00e9" for i in range(12)})
"""


@pytest.mark.slow
def test_the_same_weights_give_the_same_bytes_in_separate_processes(tmp_path):
    # safetensors itself writes its JSON header in a per-process random order (hash-map iteration order)
    paths = [tmp_path / f"w{i}.safetensors" for i in range(2)]
    for path in paths:
        subprocess.run([sys.executable, "-c", _WRITE, str(path)], check=True)
    assert len({sha256_file(p) for p in paths}) == 1
    loaded = load_file(str(paths[0]))
    assert loaded["step"].item() == 7 and loaded["layer11.weight"].shape == (3, 4)
    with safe_open(str(paths[0]), "pt") as f:
        assert f.metadata() == {f"key{i}": f"value {i} \u00e9" for i in range(12)}


def test_a_failed_write_leaves_neither_the_file_nor_a_temporary(tmp_path):
    target = tmp_path / "model.safetensors"
    save_weights({"a": torch.zeros(2)}, target)
    before = target.read_bytes()
    with pytest.raises(TypeError):
        save_weights({"a": torch.zeros(2)}, target, metadata={"bad": 1})  # metadata values must be strings
    assert target.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]
