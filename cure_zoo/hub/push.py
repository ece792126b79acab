"""Publish a run directory to the Hugging Face Hub as ONE commit, or show exactly what would be sent.

What goes up is an allow-list, never the whole folder (checkpoints, optimizer state and logs stay home):
``model.safetensors``, ``config.json`` (with the claims), ``README.md`` (the card), ``eval.json`` (the
evaluation behind the claims), ``train_hparams.yaml``, the card's figures ``figures/*.png`` and, when present,
``analysis/cka_nat_vs_adv.json`` (the data of the card's CKA figure; no other file of ``analysis/``). Each must be a
regular file whose real path lies inside the run directory (:mod:`cure_zoo.rundir`'s rule): a symlink, a
special file or a hard link anywhere among them refuses the whole push, and what is uploaded is read from the
descriptor that was checked, so a file swapped for a link after the check is refused too.

Before anything is sent the run directory must be complete and consistent: weights, config, evaluation and
card present; the weights' sha256 equal to the one in ``config.json`` and to the one the claims were
measured on; the evaluation file equal to the one the claims cite, and the claims equal to that evaluation's
own numbers; the card (README.md and figures) the one ``cure-zoo card`` wrote with those claims
(``cure_zoo.card`` in ``config.json`` records their sha256), and the CKA analysis, if any, the one that card
was drawn from (``cure_zoo.card.analysis``). A refusal names what is missing or stale.

The token comes from ``HF_TOKEN`` or the Hugging Face login (huggingface_hub's own lookup). It is passed to
huggingface_hub and nowhere else: never printed, logged or written, and scrubbed from any error text.
"""

from __future__ import annotations

import contextlib
import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CureZooError
from ..io import sha256_stream
from ..rundir import (
    ANALYSIS_DIR,
    CARD_FILE,
    CONFIG_BLOCK,
    CONFIG_FILE,
    EVAL_FILE,
    FIGURES_DIR,
    WEIGHTS_FILE,
    open_inside,
    push_files,
)
from .claims import claims_from_eval


@dataclass(frozen=True)
class UploadFile:
    path_in_repo: str
    local_path: Path
    size: int
    sha256: str


def upload_plan(run_dir: str | Path) -> list[UploadFile]:
    """The exact files one push of ``run_dir`` sends, in upload order; refuses an incomplete or stale run, or
    one holding anything but regular files inside it."""
    run_dir = Path(run_dir)
    files = []
    for name in push_files(run_dir):
        with open_inside(run_dir, name) as f:
            size, sha = sha256_stream(f)
        files.append(UploadFile(name, run_dir / name, size, sha))
    _check_consistent(run_dir, {f.path_in_repo: f.sha256 for f in files})
    return files


def _read_json(run_dir: Path, name: str) -> Any:
    with open_inside(run_dir, name) as f:
        data = f.read()
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CureZooError(f"refusing to push: {run_dir / name} is not valid JSON ({err})") from None


def _check_consistent(run_dir: Path, sha: dict[str, str]) -> None:
    config = _read_json(run_dir, CONFIG_FILE)
    zoo = (config.get(CONFIG_BLOCK) if isinstance(config, dict) else None) or {}
    weights = sha[WEIGHTS_FILE]
    again = f"run 'cure-zoo card {run_dir}' again"
    if zoo.get("weights_sha256") != weights:
        raise CureZooError(
            f"refusing to push {run_dir}: config.json's cure_zoo.weights_sha256 "
            f"({str(zoo.get('weights_sha256'))[:12]}...) is not the sha256 of {WEIGHTS_FILE} ({weights[:12]}...); "
            f"the weights changed after the config was written"
        )
    claims = zoo.get("claims") or {}
    if not claims:
        raise CureZooError(f"refusing to push {run_dir}: config.json holds no claims; run 'cure-zoo card {run_dir}'")
    if claims.get("weights_sha256") != weights or claims.get("eval_sha256") != sha[EVAL_FILE]:
        raise CureZooError(
            f"refusing to push {run_dir}: the card's claims were made for other weights or another evaluation "
            f"than the ones in the folder; {again}"
        )
    if claims != _claims_of_eval(run_dir, sha[EVAL_FILE]):
        raise CureZooError(
            f"refusing to push {run_dir}: config.json's claims are not {EVAL_FILE}'s own numbers (edited after the "
            f"card was made?); {again}"
        )
    card = zoo.get("card") or {}
    figures = {n: h for n, h in sha.items() if n.startswith(FIGURES_DIR + "/")}
    if card.get("readme_sha256") != sha[CARD_FILE] or card.get("figures") != figures:
        raise CureZooError(
            f"refusing to push {run_dir}: {CARD_FILE} and figures/ are not the card made with config.json's claims "
            f"(a card that stopped half-way, or edited since); {again}"
        )
    analysis = {n: h for n, h in sha.items() if n.startswith(ANALYSIS_DIR + "/")}
    if (card.get("analysis") or {}) != analysis:
        raise CureZooError(
            f"refusing to push {run_dir}: {', '.join(sorted(analysis)) or 'its analysis'} is not the analysis the card "
            f"was drawn from (added or changed after the card was made, or removed since); {again}"
        )


def _claims_of_eval(run_dir: Path, eval_sha256: str) -> dict[str, Any]:
    """The claims ``cure-zoo card`` makes from the run's eval.json, as JSON (to compare with config.json's)."""
    from ..evaluation.result import EvalResult

    try:
        result = EvalResult.from_json(_read_json(run_dir, EVAL_FILE))
    except CureZooError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError):
        raise CureZooError(f"refusing to push: {run_dir / EVAL_FILE} is not a cure-zoo evaluation") from None
    return json.loads(json.dumps(claims_from_eval(result, eval_sha256=eval_sha256)))


def format_plan(files: list[UploadFile], repo_id: str, revision: str | None, private: bool) -> str:
    total = sum(f.size for f in files)
    lines = [
        f"one commit to {repo_id} (branch {revision or 'main'}, {'private' if private else 'public'} repo if "
        f"created) with {len(files)} files, {total:,} bytes:",
    ]
    lines += [f"{f.sha256}  {f.size:>13,}  {f.path_in_repo}" for f in files]
    return "\n".join(lines)


def token_status() -> str:
    """Where the token would come from, without showing it."""
    import os

    from huggingface_hub import get_token

    if os.environ.get("HF_TOKEN"):
        return "token: HF_TOKEN is set (not shown)"
    if get_token():
        return "token: from the Hugging Face login (not shown)"
    return "token: none found; set HF_TOKEN or run 'hf auth login' before pushing"


def push(
    run_dir: str | Path,
    repo_id: str,
    *,
    revision: str | None = None,
    private: bool = False,
    dry_run: bool = False,
    commit_message: str | None = None,
    out: Callable[[str], None] = print,
) -> Any:
    """Push ``run_dir`` to ``repo_id`` in one commit (or, with ``dry_run``, print what would be sent and send
    nothing). Returns huggingface_hub's ``CommitInfo`` (``None`` for a dry run)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise CureZooError(f"--repo {repo_id!r} is not a Hub repo id; write ORG/NAME, e.g. my-lab/cure_r18") from None
    if "/" not in repo_id:
        raise CureZooError(f"--repo {repo_id!r} names no organisation or user; write ORG/NAME")
    files = upload_plan(run_dir)
    if dry_run:
        out("dry run: nothing was sent. The push would make " + format_plan(files, repo_id, revision, private))
        out(token_status())
        return None
    return _upload(
        Path(run_dir), files, repo_id, revision=revision, private=private, commit_message=commit_message, out=out
    )


def _transport_errors() -> tuple[type[Exception], ...]:
    """The HTTP client's own errors (a refused connection, a timeout): huggingface_hub raises them as they are,
    and they are not ``OSError``s. Whichever of httpx2/httpx the installed huggingface_hub uses."""
    found = []
    for module in ("httpx2", "httpx"):
        with contextlib.suppress(ImportError):
            found.append(importlib.import_module(module).HTTPError)
    return tuple(found)


def _upload(run_dir, files, repo_id, *, revision, private, commit_message, out) -> Any:
    from huggingface_hub import CommitOperationAdd, HfApi, get_token
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    token = get_token()
    if not token:
        raise CureZooError("no Hugging Face token: set HF_TOKEN or run 'hf auth login', then push again")
    api = HfApi(token=token)
    weights = next(f for f in files if f.path_in_repo == WEIGHTS_FILE)
    message = commit_message or f"cure-zoo push: model.safetensors sha256 {weights.sha256[:12]}"
    step = "create the repository"
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if revision and revision != "main":
            step = f"create branch {revision!r}"
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        step = "commit the files"
        with contextlib.ExitStack() as opened:
            operations = [_operation(CommitOperationAdd, run_dir, f, opened) for f in files]
            info = api.create_commit(repo_id, operations, commit_message=message, revision=revision)
    except OfflineModeIsEnabled:
        raise CureZooError("HF_HUB_OFFLINE=1 is set; unset it to push (a dry run works offline)") from None
    except (HfHubHTTPError, OSError, ValueError, *_transport_errors()) as err:
        raise CureZooError(
            f"push to {repo_id} failed to {step}: {_describe(err, token)}; nothing was committed"
        ) from None
    out(f"pushed {len(files)} files to {repo_id} in one commit {info.oid} ({info.commit_url})")
    out(
        "to serve it under its registered name, add to cure_zoo/models/published.json: "
        + _published_entry(files, info.oid)
    )
    return info


def _operation(add: Any, run_dir: Path, file: UploadFile, opened: contextlib.ExitStack) -> Any:
    """The upload of one planned file, read from a descriptor opened under the run-directory rule, refused if
    its content is no longer what the plan showed."""
    operation = add(file.path_in_repo, opened.enter_context(open_inside(run_dir, file.path_in_repo)))
    if operation.upload_info.sha256.hex() != file.sha256:
        raise CureZooError(f"{file.local_path} changed after it was checked; nothing was committed, push again")
    return operation


def _published_entry(files: list[UploadFile], revision: str) -> str:
    """The published.json record for this push: the pinned commit and the headline claims (2 decimals)."""
    config = json.loads(next(f for f in files if f.path_in_repo == CONFIG_FILE).local_path.read_text())
    zoo = config.get(CONFIG_BLOCK) or {}
    results = (zoo.get("claims") or {}).get("results", {})
    claims = {k: round(v["accuracy"] if isinstance(v, dict) else v, 2) for k, v in results.items()}
    name = zoo.get("model_name") or "<model name>"
    return json.dumps({name: {"revision": revision, "claims": claims}})


def _describe(err: Exception, token: str) -> str:
    """One line about a failed Hub call, with the token scrubbed from it."""
    status = getattr(getattr(err, "response", None), "status_code", None)
    text = (str(err).splitlines() or [type(err).__name__])[0]
    text = text.replace(token, "<token>")
    return f"HTTP {status}: {text}" if status else text
