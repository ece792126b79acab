"""A real Hugging Face Hub-compatible server on 127.0.0.1 for tests: olah (PyPI, MIT) serving plain git
repositories from a mirrors folder with the Hub's download API.

olah is read-only (every write call fails), so a repository is published the way a Hub repo is stored: as
a git commit of the files in ``<mirrors>/models/<org>/<name>``. Its upstream (``hf-netloc``) is a closed
loopback port, because olah forwards ``/api/whoami-v2`` upstream even in offline mode: nothing can leave the
machine.

huggingface_hub reads ``HF_ENDPOINT``/``HF_HUB_OFFLINE``/``HF_HOME`` once at import, and tests/conftest.py
sets them to offline and a closed port for the test process. Steps that talk to this server therefore run in
subprocesses with :meth:`OlahServer.client_env`.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

CLOSED_PORT = "127.0.0.1:9"  # nothing listens on the discard port: olah's upstream goes nowhere


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _git(repo: Path, *args: str) -> str:
    env = dict(
        os.environ,
        GIT_AUTHOR_NAME="cure-zoo tests",
        GIT_AUTHOR_EMAIL="tests@localhost",
        GIT_COMMITTER_NAME="cure-zoo tests",
        GIT_COMMITTER_EMAIL="tests@localhost",
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_CONFIG_NOSYSTEM="1",
    )
    out = subprocess.run(["git", *args], cwd=repo, env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip()


class OlahServer:
    """olah started on a free loopback port, serving ``root/mirrors``; stop() ends only the process it started."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.mirrors = self.root / "mirrors"
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> OlahServer:
        # olah from this interpreter's environment (its olah-cli script need not be on PATH)
        if importlib.util.find_spec("olah") is None or shutil.which("git") is None:
            raise RuntimeError(f"olah and git are needed: {sys.executable} -m pip install -e '.[dev]' installs olah")
        self.mirrors.mkdir(parents=True, exist_ok=True)
        config = self.root / "olah.toml"
        config.write_text(
            "[basic]\n"
            'host = "127.0.0.1"\n'
            f"port = {self.port}\n"
            f'repos-path = "{self.root / "repos"}"\n'
            'hf-scheme = "http"\n'
            f'hf-netloc = "{CLOSED_PORT}"\n'
            f'hf-lfs-netloc = "{CLOSED_PORT}"\n'
            'mirror-scheme = "http"\n'
            f'mirror-netloc = "127.0.0.1:{self.port}"\n'
            f'mirror-lfs-netloc = "127.0.0.1:{self.port}"\n'
            f'mirrors-path = ["{self.mirrors}"]\n'
            "\n[accessibility]\noffline = true\n"
        )
        # The readiness probe needs one repo; it also proves the mirror is served.
        self.publish("probe", "ready", {"README.md": b"probe\n"})
        log = open(self.root / "olah.log", "wb")  # noqa: SIM115 (closed in stop)
        self._log = log
        env = dict(os.environ, OLAH_LOG_PATH=str(self.root / "logs"))
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "olah.server", "-c", str(config)], cwd=self.root, env=env, stdout=log, stderr=log
        )
        deadline = time.monotonic() + timeout
        url = f"{self.endpoint}/api/models/probe/ready/revision/main"
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"olah exited with {self._proc.returncode}: {self.log_text()[-2000:]}")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"olah did not answer within {timeout}s: {self.log_text()[-2000:]}")

    def log_text(self) -> str:
        path = self.root / "olah.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None
        if getattr(self, "_log", None):
            self._log.close()

    def repo_dir(self, org: str, name: str) -> Path:
        return self.mirrors / "models" / org / name

    def publish(
        self, org: str, name: str, files: dict[str, bytes | Path], message: str = "publish", replace: bool = True
    ) -> str:
        """Commit ``files`` (path in repo -> bytes or a local file) to ``org/name`` on branch main, replacing
        what was there (or adding to it); returns the commit sha. Served at once, no restart."""
        repo = self.repo_dir(org, name)
        if not (repo / ".git").is_dir():
            repo.mkdir(parents=True, exist_ok=True)
            _git(repo, "init", "-q", "-b", "main")
        for old in _git(repo, "ls-files").splitlines() if replace else []:
            (repo / old).unlink()
        for path_in_repo, content in files.items():
            target = repo / path_in_repo
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                target.write_bytes(content)
            else:
                shutil.copyfile(content, target)
        _git(repo, "add", "-A")
        _git(repo, "commit", "-q", "--allow-empty", "-m", message)
        return _git(repo, "rev-parse", "HEAD")

    def client_env(self, hf_home: Path, **extra: str) -> dict[str, str]:
        """Environment for a subprocess that uses this server as the Hub (online, own cache)."""
        env = dict(os.environ)
        env.pop("HF_TOKEN", None)
        env.update(
            HF_ENDPOINT=self.endpoint,
            HF_HUB_OFFLINE="0",
            HF_HOME=str(hf_home),
            HF_HUB_CACHE=str(Path(hf_home) / "hub"),
            HF_HUB_DISABLE_TELEMETRY="1",
            HF_HUB_DISABLE_UPDATE_CHECK="1",
            HF_HUB_DISABLE_XET="1",
            OMP_NUM_THREADS="1",  # the subprocesses load and hash; one thread avoids contention on small CPUs
            PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")]),
        )
        env.update(extra)
        return env


class HubWriteAPI:
    """A FAKE of the Hub's write API, for the one thing no real server here can do: accept an upload.

    No package provides an upload-capable Hub on loopback (olah is read-only; see the module doc), so this
    implements the four calls ``cure-zoo push`` makes through huggingface_hub, as the Hub documents them:
    ``POST /api/repos/create``, ``/api/models/ORG/NAME/branch/B``, ``.../preupload/REV`` (answering "regular"
    for every file, so content travels inline) and ``.../commit/REV`` (ndjson: header + base64 files). A
    commit is written as a git commit into olah's mirrors, so what was pushed is then served by the real
    server. It records each call's path and whether the expected token was sent, never the token itself.
    """

    def __init__(self, olah: OlahServer, expected_token: str):
        self.olah = olah
        self.calls: list[dict] = []
        self.commits: list[dict] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                authorized = self.headers.get("Authorization") == f"Bearer {expected_token}"
                api.calls.append({"path": self.path, "authorized": authorized})
                status, answer = api.handle(self.path.split("?")[0], body) if authorized else (401, {"error": "401"})
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> HubWriteAPI:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def handle(self, path: str, body: bytes) -> tuple[int, dict]:
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "validate-yaml"]:
            return self.validate_card(json.loads(body).get("content", ""))
        if parts[:3] == ["api", "repos", "create"]:
            req = json.loads(body)
            return 200, {"url": f"{self.endpoint}/{req['organization']}/{req['name']}"}
        if len(parts) >= 6 and parts[:2] == ["api", "models"]:
            org, name, action, revision = parts[2], parts[3], parts[4], "/".join(parts[5:])
            if action == "branch":
                return 200, {}
            if action == "preupload":
                files = json.loads(body)["files"]
                return 200, {
                    "files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]
                }
            if action == "commit" and revision == "main":
                lines = [json.loads(line) for line in body.splitlines() if line.strip()]
                files = {
                    x["value"]["path"]: base64.b64decode(x["value"]["content"])
                    for x in lines
                    if x["key"] == "file" and x["value"].get("encoding") == "base64"
                }
                header = next(x["value"] for x in lines if x["key"] == "header")
                sha = self.olah.publish(org, name, files, message=header["summary"], replace=False)
                self.commits.append({"repo": f"{org}/{name}", "files": sorted(files), "message": header["summary"]})
                return 200, {
                    "commitUrl": f"{self.endpoint}/{org}/{name}/commit/{sha}",
                    "commitOid": sha,
                    "pullRequestUrl": None,
                }
        return 404, {"error": f"not implemented by the test fake: {path}"}

    @staticmethod
    def validate_card(content: str) -> tuple[int, dict]:
        """What the Hub checks before accepting a README: YAML front matter that parses, and a model-index whose
        results each have a task type, a dataset type and name, and metrics with a type and a numeric value."""
        import yaml

        try:
            meta = yaml.safe_load(content.split("---\n")[1]) if content.startswith("---\n") else {}
        except (yaml.YAMLError, IndexError) as err:
            return 400, {"error": f"invalid YAML: {err}"}
        errors = []
        for model in meta.get("model-index", []) or []:
            for result in model.get("results", []):
                if not result.get("task", {}).get("type"):
                    errors.append("result without task.type")
                if not (result.get("dataset", {}).get("type") and result["dataset"].get("name")):
                    errors.append("result without dataset.type/name")
                for metric in result.get("metrics", []):
                    if not metric.get("type") or not isinstance(metric.get("value"), int | float):
                        errors.append(f"bad metric {metric}")
        return (400, {"error": "; ".join(errors)}) if errors else (200, {})


def contract_config(
    architecture: str,
    weights_sha256: str,
    *,
    num_classes: int = 10,
    num_features: int = 512,
    model_args: dict | None = None,
    **zoo,
) -> dict:
    """A run directory's config.json as cure_zoo.training.outputs writes it (timm's format + the cure_zoo block)."""
    return {
        "architecture": architecture,
        "num_classes": num_classes,
        "num_features": num_features,
        "model_args": dict(model_args or {}),
        "pretrained_cfg": {
            "input_size": [3, 32, 32],
            "crop_pct": 1.0,
            "interpolation": "bilinear",
            "mean": [0.0, 0.0, 0.0],
            "std": [1.0, 1.0, 1.0],
            "num_classes": num_classes,
            "first_conv": "conv1",
            "classifier": "linear",
        },
        "cure_zoo": {"weights_sha256": weights_sha256, **zoo},
    }


def run_python(code: str, env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``code`` (with ``sys.argv[1:] = args``) in a fresh interpreter, so huggingface_hub reads ``env``."""
    return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=timeout)


def run_cli(args: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``cure-zoo ARGS`` in a fresh interpreter with ``env``."""
    code = "import sys; from cure_zoo.cli.main import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=timeout)
