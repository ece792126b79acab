"""The CIFAR-10-C reader and the corruption evaluation, on a small archive in the official layout that this
test builds itself from the bundled real CIFAR-10 test images. Its "corruptions" are simple ones of our own
(noise, a box blur, brightness and contrast shifts) under the official file names: it is NOT CIFAR-10-C, it
only has its layout (labels.npy plus one [5 x N, 32, 32, 3] uint8 file per corruption, severity 1 first)."""

import json

import numpy as np
import pytest
import torch

from cure_zoo.analysis.corruptions import (
    GROUPS,
    STANDARD,
    evaluate_corruptions,
    find_corruption_dir,
    read_corruption,
)
from cure_zoo.errors import DatasetError
from tests.tiny_models import tiny_model

N = 20  # images per severity in the test archive


def _not_cifar10c(x: np.ndarray, corruption: str, severity: int) -> np.ndarray:
    """Our own corruption of uint8 images [N, 32, 32, 3] (labelled as not CIFAR-10-C's)."""
    f = x.astype(np.float32) / 255
    rng = np.random.default_rng(severity)
    if corruption.endswith("noise"):
        f = f + rng.normal(0, 0.04 * severity, f.shape)
    elif corruption.endswith("blur") or corruption in ("pixelate", "jpeg_compression", "elastic_transform"):
        k = severity
        pad = np.pad(f, ((0, 0), (k, k), (k, k), (0, 0)), mode="edge")
        f = sum(pad[:, i : i + 32, j : j + 32] for i in range(2 * k + 1) for j in range(2 * k + 1)) / (2 * k + 1) ** 2
    elif corruption == "contrast":
        f = (f - f.mean((1, 2), keepdims=True)) * (1 - 0.18 * severity) + f.mean((1, 2), keepdims=True)
    else:  # weather and the rest: a brightness shift
        f = f + 0.08 * severity
    return (np.clip(f, 0, 1) * 255).round().astype(np.uint8)


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    from cure_zoo.data import load_bundled

    test = load_bundled("cifar10", "test", n=N)
    x = (test.images.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    root = tmp_path_factory.mktemp("not_cifar10c") / "CIFAR-10-C"
    root.mkdir()
    np.save(root / "labels.npy", np.tile(test.labels.numpy().astype(np.uint8), 5))
    for c in STANDARD:
        np.save(root / f"{c}.npy", np.concatenate([_not_cifar10c(x, c, s) for s in range(1, 6)]))
    return root


def test_reader_follows_the_official_layout(archive):
    assert find_corruption_dir("cifar10", archive.parent) == archive == find_corruption_dir("cifar10", archive)
    sev3 = read_corruption(archive, "gaussian_noise", 3)
    assert len(sev3) == N and sev3.images.shape == (N, 3, 32, 32) and sev3.images.dtype == torch.float32
    raw = np.load(archive / "gaussian_noise.npy")
    assert torch.equal(
        (sev3.images * 255).round().to(torch.uint8), torch.from_numpy(raw[2 * N : 3 * N]).permute(0, 3, 1, 2)
    )
    from cure_zoo.data import load_bundled

    assert torch.equal(sev3.labels, load_bundled("cifar10", "test", n=N).labels)
    assert len(read_corruption(archive, "fog", 5, n=7)) == 7
    with pytest.raises(DatasetError, match="asked for 30 images per severity"):
        read_corruption(archive, "fog", 1, n=30)
    with pytest.raises(DatasetError, match="no CIFAR-10-C in"):
        find_corruption_dir("cifar10", archive.parent.parent)
    with pytest.raises(DatasetError, match="spatter.npy is missing"):
        read_corruption(archive, "spatter", 1)


def test_a_file_not_in_the_layout_is_one_clear_error(tmp_path):
    np.save(tmp_path / "labels.npy", np.zeros(50, dtype=np.uint8))
    np.save(tmp_path / "fog.npy", np.zeros((40, 32, 32, 3), dtype=np.uint8))
    (tmp_path / "frost.npy").write_bytes(b"not a numpy file")
    with pytest.raises(DatasetError, match="official layout"):
        read_corruption(tmp_path, "fog", 1)
    with pytest.raises(DatasetError, match="cannot read .*frost.npy"):
        read_corruption(tmp_path, "frost", 1)


def test_evaluation_per_corruption_group_and_severity(archive, tmp_path):
    model = tiny_model()
    result = evaluate_corruptions(model, archive.parent, n_examples=N, batch_size=N)
    assert set(result.accuracy) == set(STANDARD) and all(len(v) == 5 for v in result.accuracy.values())
    # each number is the model's accuracy on exactly those images (recomputed here)
    images = read_corruption(archive, "zoom_blur", 4)
    with torch.no_grad():
        expected = 100 * (model(images.images).argmax(1) == images.labels).float().mean().item()
    assert result.accuracy["zoom_blur"][4] == pytest.approx(expected)
    assert result.correct["zoom_blur"][4] == round(expected * N / 100)
    obj = json.loads(result.save(tmp_path / "c.json").read_text())
    sev3, mean = obj["severity_3"], obj["mean_over_severities"]
    assert set(sev3["per_group"]) == {"blur", "digital", "noise", "weather"}
    blur = [c for c in GROUPS["blur"] if c in STANDARD]
    assert sev3["per_group"]["blur"] == pytest.approx(sum(result.accuracy[c][3] for c in blur) / len(blur))
    assert obj["robustbench_corruptions_acc"] == pytest.approx(sum(mean["per_corruption"].values()) / 15)
    assert result.plot(tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    part = evaluate_corruptions(model, archive, corruptions="fog,snow", severities=(3,), n_examples=5)
    assert set(part.accuracy) == {"fog", "snow"} and part.robustbench_accuracy() is None
    with pytest.raises(DatasetError, match="unknown corruption 'rain'"):
        evaluate_corruptions(model, archive, corruptions="rain")
