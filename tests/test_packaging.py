"""The package as users get it: a wheel built from this checkout and installed in a fresh virtual environment
outside it (system site-packages visible, so torch is not installed again), then used from another folder:
``cure-zoo list``, a recipe loaded by name, a model evaluated on 8 bundled images, ``cure-zoo train --print``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow  # builds and installs a wheel, then runs it in subprocesses

USE_THE_WHEEL = """
import json, sys
import cure_zoo
from cure_zoo.training.outputs import code_revision
from cure_zoo.training.recipe import RECIPES_DIR, load_recipe
recipe = load_recipe("cure_resnet18_cifar10")
small = load_recipe("cure_resnet18_w16_cifar10_5k")
print(json.dumps({"package": cure_zoo.__file__, "recipes_dir": str(RECIPES_DIR), "recipe": recipe.name,
                  "small": small.name, "revision": code_revision(), "version": cure_zoo.__version__}))
"""


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{cmd[:3]} exited {done.returncode}: {done.stderr[-2000:]}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path, dict[str, str]]:
    """(the wheel, the venv's bin folder, an environment without this checkout on any path)."""
    tmp = tmp_path_factory.mktemp("wheel")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp), str(ROOT)],
        tmp,
        env,
    )
    (wheel,) = tmp.glob("cure_zoo-*.whl")
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], tmp, env)
    bin_dir = venv / ("Scripts" if os.name == "nt" else "bin")
    # --force-reinstall: the checkout's own (editable) install is visible through the system site-packages
    _run(
        [str(bin_dir / "python"), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", str(wheel)], tmp, env
    )
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    work = tmp / "elsewhere"
    work.mkdir()
    return wheel, bin_dir, dict(env, HOME=str(work))


def test_the_wheel_ships_the_recipes_and_data_and_nothing_from_outside_the_package(installed):
    wheel, _, _ = installed
    names = zipfile.ZipFile(wheel).namelist()
    assert "cure_zoo/recipes/cure_resnet18_cifar10.yaml" in names
    assert "cure_zoo/recipes/cure_resnet18_w16_cifar10_5k.yaml" in names
    assert "cure_zoo/data/bundled/cifar10_test.npz" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") or n.endswith(".dist-info/LICENSE") for n in names)
    assert any(n.endswith("NOTICE") for n in names)
    assert not [n for n in names if n.split("/")[0] not in ("cure_zoo",) and ".dist-info" not in n.split("/")[0]]
    assert not [n for n in names if "/__pycache__/" in n or n.startswith(("tests/", "runs/", "recipes/"))]
    # apart from the shipped real images and model weights, the wheel stays small
    shipped = ("/models/bundled/", "/data/bundled/")
    infos = zipfile.ZipFile(wheel).infolist()
    rest = sum(i.file_size for i in infos if not any(s in i.filename for s in shipped))
    assert rest < 4 * 2**20, f"{rest / 2**20:.1f} MiB besides the bundled images and models"
    models = sum(i.file_size for i in infos if "/models/bundled/" in i.filename)
    assert models < 20 * 2**20, f"{models / 2**20:.1f} MiB of shipped models"


def test_the_installed_wheel_lists_loads_a_recipe_and_evaluates_from_another_folder(installed, tmp_path):
    _, bin_dir, env = installed
    work = Path(env["HOME"])
    listed = _run([str(bin_dir / "cure-zoo"), "list", "--json"], work, env)
    assert "cure_resnet18_cifar10" in {row["name"] for row in json.loads(listed.stdout)}

    used = json.loads(_run([str(bin_dir / "python"), "-c", USE_THE_WHEEL], work, env).stdout.splitlines()[-1])
    venv = bin_dir.parent.resolve()
    assert Path(used["package"]).resolve().is_relative_to(venv), used  # the wheel's copy, not the checkout's
    assert Path(used["recipes_dir"]).resolve().is_relative_to(venv)
    assert used["recipe"] == "cure_resnet18_cifar10" and used["small"] == "cure_resnet18_w16_cifar10_5k"
    assert used["revision"] == f"cure-zoo=={used['version']}"  # no git commit outside a checkout

    out = tmp_path / "eval.json"
    _run(
        [str(bin_dir / "cure-zoo"), "eval", "st_resnet18_cifar10.autoattack", "--attacks", "nat,pgd20",
         "--n-examples", "8", "--device", "cpu", "--no-download", "--no-progress", "--json", str(out)],
        work,
        env,
    )  # fmt: skip
    assert "pgd20" in json.loads(out.read_text())["results"]

    printed = _run([str(bin_dir / "cure-zoo"), "train", "--recipe", "smoke_cure_cifar10", "--print"], work, env)
    assert "name: smoke_cure_cifar10" in printed.stdout
