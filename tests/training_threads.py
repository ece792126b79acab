"""A module-scoped autouse fixture for the training tests: one intra-op thread. Their steps are small, and on
a shared 2-core machine (CI runs everyone's tests at once) a second thread mostly waits. Import it into a test
module to apply it there."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
