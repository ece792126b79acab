"""Test environment. huggingface_hub reads its settings once, at import, so they are set here, before any
test module imports it: offline by default, the endpoint on a closed loopback port (no test can reach the
internet), and every cache in a temporary folder.

One intra-op thread for every test and the subprocesses they start (``OMP_NUM_THREADS``, unless set): the
tests' models are small, so a second thread mostly waits, and on a loaded 2-core machine it made the
four-stage AutoAttack test 38x slower (1,289 s with 2 threads vs 34 s with 1)."""

import os
import tempfile
from pathlib import Path

_TMP = Path(tempfile.mkdtemp(prefix="cure_zoo_tests_"))
os.environ.update(
    HF_HUB_OFFLINE="1",
    HF_ENDPOINT="http://127.0.0.1:9",
    HF_HOME=str(_TMP / "hf_home"),
    HF_HUB_DISABLE_TELEMETRY="1",
    HF_HUB_DISABLE_UPDATE_CHECK="1",
    HF_HUB_DISABLE_XET="1",
    CURE_ZOO_CACHE=str(_TMP / "cure_zoo_cache"),
)
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.pop("CURE_ZOO_HF_ORG", None)
os.environ.pop("HF_TOKEN", None)

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

DATA_DIR = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def cifar10_test():
    from cure_zoo.data import load_bundled

    return load_bundled("cifar10", "test")


@pytest.fixture(scope="session")
def autoattack_resnet18():
    """The real, naturally trained CIFAR-10 ResNet-18 shipped in the pyautoattack wheel, in eval mode."""
    import timm

    import cure_zoo  # noqa: F401

    return timm.create_model("st_resnet18_cifar10.autoattack", pretrained=True).eval()


@pytest.fixture(scope="module")
def batch():
    """16 bundled CIFAR-10 training images as a method step's Batch, with seeded start noise."""
    from cure_zoo.data import load_bundled
    from cure_zoo.training.methods.base import Batch

    data = load_bundled("cifar10", "train", n=16)
    x, y = data.images, data.labels

    def noise(kind):
        g = torch.Generator().manual_seed(0)
        return torch.randn(x.shape, generator=g) if kind == "normal" else torch.rand(x.shape, generator=g)

    return Batch(x, y, 1.0, noise)


@pytest.fixture
def stop_at_second_chunk(monkeypatch):
    """cure_zoo.evaluation.evaluate (which evaluate_chunked looks up at call time) measures the first chunk and
    raises KeyboardInterrupt on the second, once; later calls measure. Returns the list of every call's image
    indices (clear it to watch a resumed run)."""
    import cure_zoo.evaluation as evaluation

    original, calls, made = evaluation.evaluate, [], [0]

    def interrupted(model, images, *a, **k):
        calls.append(images.indices.tolist())
        made[0] += 1
        if made[0] == 2:
            raise KeyboardInterrupt
        return original(model, images, *a, **k)

    monkeypatch.setattr(evaluation, "evaluate", interrupted)
    return calls
