"""Test splits for evaluation: torchvision layout on disk, the bundled fallback (announced once), errors."""

import pickle

import numpy as np
import pytest
import torch

from cure_zoo.data import load_bundled, load_testset
from cure_zoo.errors import DatasetError


def _write_torchvision_cifar10(root, images):
    """The bundled test images in torchvision's cifar-10-batches-py layout (test_batch + batches.meta)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    data = (images.images * 255).round().to(torch.uint8).flatten(1).numpy()  # N x 3072, channel-major
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": data, "labels": images.labels.tolist()}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)


def test_torchvision_layout_is_read_in_official_order(tmp_path, monkeypatch, cifar10_test):
    # A fake, said so: torchvision checks the md5 of all six CIFAR-10 files, which cannot be had offline, so the
    # integrity check is switched off and the folder holds only the real bundled test images.
    _write_torchvision_cifar10(tmp_path, cifar10_test.take(50))
    monkeypatch.setattr("torchvision.datasets.cifar.check_integrity", lambda *args, **kwargs: True)
    notices = []
    got = load_testset("cifar10", data_dir=tmp_path, n=20, notify=notices.append)
    assert notices == [] and got.source.startswith("torchvision CIFAR10 test split in")
    assert torch.equal(got.images, cifar10_test.images[:20]) and torch.equal(got.labels, cifar10_test.labels[:20])
    assert got.indices.tolist() == list(range(20))
    monkeypatch.setenv("CURE_ZOO_DATA", str(tmp_path))  # the environment variable is the default --data-dir
    assert len(load_testset("cifar10", notify=notices.append)) == 50 and notices == []


def test_missing_dataset_offline_falls_back_to_bundled_with_one_notice(tmp_path):
    notices = []
    got = load_testset("cifar100", data_dir=tmp_path, n=7, notify=notices.append)  # HF_HUB_OFFLINE=1 in tests
    assert len(notices) == 1
    assert f"no CIFAR100 test split in {tmp_path}" in notices[0] and "downloading is off" in notices[0]
    assert "first 916 images" in notices[0] and "test indices 0-6" in notices[0]
    assert torch.equal(got.images, load_bundled("cifar100", "test", n=7).images)
    assert not any(tmp_path.iterdir())  # nothing downloaded, nothing half-written


def test_errors_say_what_to_do(tmp_path):
    with pytest.raises(DatasetError, match="no svhn images ship.*--data-dir"):
        load_testset("svhn", data_dir=tmp_path, notify=None)
    with pytest.raises(DatasetError, match="asked for 1018 cifar10 test images.*only 1017"):
        load_testset("cifar10", n=1018, notify=None)
    with pytest.raises(DatasetError, match="choose one of: cifar10, cifar100, svhn"):
        load_testset("imagenet", notify=None)
    with pytest.raises(DatasetError, match="must be positive"):
        load_testset("cifar10", n=0, notify=None)


def test_bundled_pixels_survive_the_uint8_round_trip(cifar10_test):
    # the torchvision path and the bundled path must give bit-identical inputs for the same image
    x = cifar10_test.images[:5]
    assert np.array_equal((x * 255).round().to(torch.uint8).float().div(255).numpy(), x.numpy())
