"""Repository invariants: CI runs exactly the README's test command; nothing reads the workplace's shared folder."""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands():
    return re.findall(r"```bash\n(.+?)\n```", (ROOT / "README.md").read_text())


def test_ci_runs_the_readme_test_command():
    test_command = _readme_commands()[1]
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in ci


def test_no_code_reads_the_shared_folder():
    files = subprocess.run(
        ["git", "ls-files", "*.py", "*.yaml", ".ci/*"], cwd=ROOT, capture_output=True, text=True
    ).stdout.split()
    shared = "../" + "shared"  # spelled in two parts so this guard does not match itself
    offenders = [f for f in files if shared in (ROOT / f).read_text()]
    assert not offenders
