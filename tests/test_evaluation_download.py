"""The download path of ``load_testset`` (and ``cure-zoo eval --data-dir``), end to end with real torchvision.

There is no network here, so the test builds a genuine CIFAR-10 python-format tarball from the bundled real
images (``cifar-10-batches-py/`` with ``data_batch_1``-``5``, ``test_batch`` and ``batches.meta``, pickled as
torchvision reads them) and serves it with ``http.server`` on 127.0.0.1. ONLY the URL and the md5 checksums of
``torchvision.datasets.CIFAR10`` are redirected to that local server (monkeypatch of its class attributes);
everything else is real torchvision: its request for redirects, the download, the md5 check of the archive,
the extraction, the per-file integrity check and the unpickling.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import socket
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
import torchvision.datasets as tvd

from cure_zoo.cli.main import main
from cure_zoo.data import load_bundled, load_testset, testsets
from tests.tiny_models import save_run_dir

ARCHIVE = "cifar-10-python.tar.gz"  # torchvision saves the download under this name
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
TRAIN_PER_BATCH = 4  # the real first images of each training batch (the bundled train set holds prefixes)


def _pickled_batch(images: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor, name: str) -> bytes:
    """One batch file as CIFAR-10 ships it: ``data`` N x 3072 uint8 (R, G, B planes, each row-major), ``labels``."""
    data = (images * 255).round().to(torch.uint8).flatten(1).numpy()
    filenames = [f"image_{int(i):05d}.png" for i in indices]
    batch = {"batch_label": name, "labels": labels.tolist(), "data": data, "filenames": filenames}
    return pickle.dumps(batch, protocol=2)


def _cifar10_files(test, train) -> tuple[dict[str, bytes], torch.Tensor]:
    """The six files of cifar-10-batches-py: all bundled test images, the first few of each training batch."""
    files = {"test_batch": _pickled_batch(test.images, test.labels, test.indices, "testing batch 1 of 1")}
    train_rows = []
    for b in range(5):  # data_batch_{b+1} holds official train indices 10000*b ... 10000*(b+1)-1
        rows = torch.nonzero((train.indices >= 10000 * b) & (train.indices < 10000 * (b + 1)))[:TRAIN_PER_BATCH, 0]
        assert train.indices[rows].tolist() == list(range(10000 * b, 10000 * b + TRAIN_PER_BATCH))
        name = f"training batch {b + 1} of 5"
        files[f"data_batch_{b + 1}"] = _pickled_batch(train.images[rows], train.labels[rows], train.indices[rows], name)
        train_rows.append(rows)
    meta = {"num_cases_per_batch": 10000, "label_names": CLASSES, "num_vis": 3072}
    files["batches.meta"] = pickle.dumps(meta, protocol=2)
    return files, train.images[torch.cat(train_rows)]


def _tarball(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1) as tar:
        for name, payload in files.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size, info.mode = len(payload), 0o644
            tar.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()


def _md5(payload: bytes) -> str:
    return hashlib.md5(payload).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    """GET /good/ARCHIVE: the tarball; /corrupt/: one byte flipped; /truncated/: half of it, then the connection
    closes; /not-http/: a reply that is not HTTP; anything else: 404."""

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.server.requests.append(self.path)
        tarball = self.server.tarball
        if self.path == f"/good/{ARCHIVE}":
            self._send(tarball, len(tarball))
        elif self.path == f"/corrupt/{ARCHIVE}":
            self._send(tarball[:100] + bytes([tarball[100] ^ 1]) + tarball[101:], len(tarball))
        elif self.path == f"/truncated/{ARCHIVE}":
            self._send(tarball[: len(tarball) // 2], len(tarball))
            self.close_connection = True
        elif self.path == f"/not-http/{ARCHIVE}":
            self.wfile.write(b"this is not an HTTP reply\r\n\r\n")
            self.close_connection = True
        else:
            self.send_error(404)

    def _send(self, body: bytes, length: int) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/gzip")
        self.send_header("Content-Length", str(length))
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # torchvision's redirect probe reads no body
            pass

    def log_message(self, format, *args):  # quiet
        pass


@pytest.fixture(scope="module")
def cifar10_server(cifar10_test):
    files, train_images = _cifar10_files(cifar10_test, load_bundled("cifar10", "train"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.tarball, server.files, server.train_images, server.requests = _tarball(files), files, train_images, []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def serve_cifar10(cifar10_server, monkeypatch):
    """Point torchvision's CIFAR10 at ``http://127.0.0.1:PORT/<variant>/ARCHIVE`` with the served checksums."""

    def point(variant: str = "good", port: int | None = None):
        files = cifar10_server.files
        port = cifar10_server.server_address[1] if port is None else port
        monkeypatch.setattr(tvd.CIFAR10, "url", f"http://127.0.0.1:{port}/{variant}/{ARCHIVE}")
        monkeypatch.setattr(tvd.CIFAR10, "tgz_md5", _md5(cifar10_server.tarball))
        train_list = [[f"data_batch_{b}", _md5(files[f"data_batch_{b}"])] for b in range(1, 6)]
        monkeypatch.setattr(tvd.CIFAR10, "train_list", train_list)
        monkeypatch.setattr(tvd.CIFAR10, "test_list", [["test_batch", _md5(files["test_batch"])]])
        meta = {"filename": "batches.meta", "key": "label_names", "md5": _md5(files["batches.meta"])}
        monkeypatch.setattr(tvd.CIFAR10, "meta", meta)
        cifar10_server.requests.clear()
        return cifar10_server.requests

    return point


def _hwc_uint8(images: torch.Tensor) -> torch.Tensor:
    return (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1)


def _files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_download_extracts_the_official_order_and_is_found_on_disk_next_time(
    tmp_path, cifar10_server, serve_cifar10, cifar10_test
):
    requests = serve_cifar10()
    root, notices = tmp_path / "data", []
    # download=True downloads even though the tests run with HF_HUB_OFFLINE=1 (which only stops "auto")
    got = load_testset("cifar10", data_dir=root, download=True, n=300, notify=notices.append)
    assert notices == [] and requests and set(requests) == {f"/good/{ARCHIVE}"}
    assert got.source == f"torchvision CIFAR10 test split in {root} (all 1,017 images)"
    assert torch.equal(got.images, cifar10_test.images[:300]) and torch.equal(got.labels, cifar10_test.labels[:300])
    assert got.indices.tolist() == list(range(300))
    assert (root / ARCHIVE).read_bytes() == cifar10_server.tarball  # torchvision keeps the archive it fetched
    assert {p.name for p in _files_under(root / "cifar-10-batches-py")} == {
        "batches.meta", "test_batch", *(f"data_batch_{b}" for b in range(1, 6))
    }  # fmt: skip

    train = tvd.CIFAR10(root, train=True)  # torchvision reads the whole extracted archive, train batches too
    assert train.classes == CLASSES and torch.equal(
        torch.from_numpy(train.data), _hwc_uint8(cifar10_server.train_images)
    )

    count = len(requests)
    again = load_testset("cifar10", data_dir=root, download=True, notify=notices.append)  # found on disk
    assert len(requests) == count and notices == []
    assert torch.equal(again.images, cifar10_test.images) and again.indices.tolist() == list(range(1017))


@pytest.mark.parametrize("variable", ["HF_HUB_OFFLINE", "CURE_ZOO_OFFLINE"])
def test_auto_download_offline_makes_no_request_and_falls_back_once(
    tmp_path, serve_cifar10, monkeypatch, variable, cifar10_test
):
    requests = serve_cifar10()
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("CURE_ZOO_OFFLINE", raising=False)
    monkeypatch.setenv(variable, "1")
    root, notices = tmp_path / "data", []
    got = load_testset("cifar10", data_dir=root, download="auto", n=5, notify=notices.append)
    assert requests == [] and _files_under(root) == []
    assert len(notices) == 1 and f"no CIFAR10 test split in {root} and downloading is off (offline)" in notices[0]
    assert got.source.startswith("bundled real cifar10 test subset") and torch.equal(
        got.images, cifar10_test.images[:5]
    )


@pytest.fixture
def short_download_timeout(monkeypatch):
    # cure_zoo's own socket timeout for downloads (30 s), shortened so the silent-server case takes half a second
    monkeypatch.setattr(testsets, "_DOWNLOAD_TIMEOUT_S", 0.5)


@pytest.mark.parametrize(
    "variant,failure",
    [
        ("missing", "HTTPError: HTTP Error 404"),
        ("corrupt", "RuntimeError: File not found or corrupted."),  # torchvision's md5 check of the archive
        ("truncated", "RuntimeError: File not found or corrupted."),
        ("not-http", "BadStatusLine"),
        ("silent", "timed out"),  # a server that accepts the connection and never answers
    ],
)
def test_a_failed_download_falls_back_with_a_notice_and_leaves_no_file(
    tmp_path, serve_cifar10, short_download_timeout, variant, failure, cifar10_test
):
    if variant == "silent":
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)  # connections complete in the backlog, nobody accepts or answers
        requests = serve_cifar10(port=listener.getsockname()[1])
    else:
        requests = serve_cifar10(variant)
    root, notices = tmp_path / "data", []
    try:
        got = load_testset("cifar10", data_dir=root, download=True, n=6, notify=notices.append)
    finally:
        if variant == "silent":
            listener.close()
    assert (requests == []) if variant == "silent" else (requests and set(requests) == {f"/{variant}/{ARCHIVE}"})
    assert len(notices) == 1, notices
    assert f"no CIFAR10 test split in {root} and the download failed (" in notices[0] and failure in notices[0]
    assert "test indices 0-5" in notices[0]
    assert got.source.startswith("bundled real cifar10 test subset") and torch.equal(
        got.images, cifar10_test.images[:6]
    )
    assert _files_under(root) == []  # no partial or corrupted archive left to be found next time


def test_cli_eval_downloads_when_online_and_not_with_no_download(tmp_path, serve_cifar10, monkeypatch, capsys):
    requests = serve_cifar10()
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # set by conftest; the CLI's default is download="auto"
    monkeypatch.delenv("CURE_ZOO_OFFLINE", raising=False)
    run_dir = save_run_dir(tmp_path / "run")
    args = ["eval", str(run_dir), "--attacks", "nat", "--n-examples", "8", "--no-progress"]

    off = tmp_path / "off"
    assert main([*args, "--data-dir", str(off), "--no-download"]) == 0
    assert requests == [] and _files_under(off) == []
    err = capsys.readouterr().err
    assert err.count("notice: ") == 1 and f"no CIFAR10 test split in {off} and downloading is off; evaluating" in err

    root, out = tmp_path / "data", tmp_path / "eval.json"
    assert main([*args, "--data-dir", str(root), "--json", str(out)]) == 0
    stdout, stderr = capsys.readouterr()
    assert requests and "notice:" not in stderr and "on 8 cifar10 test images" in stdout
    dataset = json.loads(out.read_text())["dataset"]
    assert dataset["source"] == f"torchvision CIFAR10 test split in {root} (all 1,017 images)"
    assert dataset["indices"] == [[0, 8]]
    assert (root / "cifar-10-batches-py" / "test_batch").is_file()
