"""The bundled real CIFAR subsets."""

import hashlib
from importlib import resources

import pytest
import torch

from cure_zoo.data import DATASETS, load_bundled
from cure_zoo.errors import DatasetError


@pytest.mark.parametrize("dataset,split", [("cifar10", "test"), ("cifar10", "train"), ("cifar100", "test")])
def test_bundled_files_are_the_documented_ones(dataset, split):
    subset = DATASETS[dataset].bundled[split]
    data = (resources.files("cure_zoo.data") / "bundled" / subset.filename).read_bytes()
    assert hashlib.sha256(data).hexdigest() == subset.sha256
    images = load_bundled(dataset, split)
    assert len(images) == subset.num_images
    assert images.images.shape == (subset.num_images, 3, 32, 32) and images.images.dtype == torch.float32
    assert 0.0 <= images.images.min() and images.images.max() <= 1.0
    assert images.labels.max() < DATASETS[dataset].num_classes


def test_cifar10_test_is_the_official_prefix():
    images = load_bundled("cifar10", "test")
    assert images.labels[:20].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1, 0, 9, 5, 7, 9, 8, 5, 7, 8, 6]
    assert images.indices.tolist() == list(range(1017))
    # Pixel (0, 0) of test image 0 is (158, 112, 49): exact pixels, not a re-encoding.
    assert (images.images[0, :, 0, 0] * 255).round().tolist() == [158.0, 112.0, 49.0]


def test_take_and_errors():
    assert len(load_bundled("cifar100", n=10)) == 10
    with pytest.raises(DatasetError, match="has only 916"):
        load_bundled("cifar100", n=5000)
    with pytest.raises(DatasetError, match="no bundled images for svhn"):
        load_bundled("svhn")
    with pytest.raises(DatasetError, match="unknown dataset 'imagenet'"):
        load_bundled("imagenet")
