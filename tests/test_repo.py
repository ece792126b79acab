"""Repository invariants: CI runs exactly the README's test command; nothing reads the workplace's shared folder."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def readme_command(label: str) -> str:
    """The one-line command in the bash block that follows README's ``<!-- command: LABEL -->`` marker."""
    found = re.findall(rf"<!-- command: {label} -->\n```bash\n(.+?)\n```", (ROOT / "README.md").read_text())
    assert len(found) == 1, f"README needs exactly one '<!-- command: {label} -->' block"
    return found[0]


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert readme_command("tests") in ci


@pytest.mark.slow
def test_the_readme_main_command_runs_offline_and_shows_robustness():
    """README's first command (its install step aside) on the shipped small-scale CURE model."""
    install, _, command = readme_command("main").partition(" && ")
    assert install == "pip install -e ." and command.startswith("cure-zoo eval cure_resnet18_w16_cifar10_5k")
    args = shlex.split(command)[1:]
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    out = subprocess.run(
        [sys.executable, "-m", "cure_zoo.cli.main", *args], capture_output=True, text=True, env=env, timeout=900
    )
    assert out.returncode == 0, out.stderr
    pgd = next(line for line in out.stdout.splitlines() if line.lstrip().lower().startswith("pgd20"))
    assert float(re.search(r"(\d+\.\d+)", pgd).group(1)) > 0.0  # a natural model scores 0 here


def test_no_code_reads_the_shared_folder():
    files = subprocess.run(
        ["git", "ls-files", "*.py", "*.yaml", ".ci/*"], cwd=ROOT, capture_output=True, text=True
    ).stdout.split()
    shared = "../" + "shared"  # spelled in two parts so this guard does not match itself
    offenders = [f for f in files if shared in (ROOT / f).read_text()]
    assert not offenders
