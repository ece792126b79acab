"""Where pretrained weights come from, and the checks made before they are loaded.

``resolve_weights_file`` turns a model's pretrained cfg into a local ``.safetensors`` (or authors' ``.pt``)
file, or raises one clear :class:`PretrainedWeightsError`:

* ``file`` set (``pretrained_cfg_overlay=dict(file=...)``): that file, which must exist; a folder (timm's
  ``local-dir:/path``): its ``model.safetensors``, checked against its ``config.json`` like a download.
* ``hf_hub_id`` (a registered zoo name or ``hf-hub:ORG/NAME``): ``config.json`` and ``model.safetensors``
  from the Hub (``HF_ENDPOINT``, ``HF_HUB_OFFLINE`` and the HF cache respected); the weights' sha256 must equal
  the ``weights_sha256`` published in ``config.json``'s ``cure_zoo`` block.
* ``source='pyautoattack'``: the ResNet-18 inside the installed pyautoattack wheel, converted once to
  safetensors in the zoo's cache folder.
* ``source='package'``: a model shipped inside this package (``cure_zoo/models/bundled/<name>/``), whose
  sha256 must equal the one pinned in ``published.json``.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from importlib import metadata, resources
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..errors import PretrainedWeightsError, WeightsIntegrityError
from ..io import read_checked, record_checked, save_weights, sha256_file
from ..rundir import CONFIG_BLOCK, CONFIG_FILE, WEIGHTS_FILE, described_sha256
from .zoo import DEFAULT_HF_ORG, HF_ORG_ENV, ZooEntry

if TYPE_CHECKING:
    from timm.models import PretrainedCfg

_logger = logging.getLogger(__name__)

CACHE_ENV = "CURE_ZOO_CACHE"
# the natural ResNet-18 inside the pyautoattack wheel (st_resnet18_cifar10.autoattack), a torch pickle
PYAUTOATTACK_WEIGHTS = ("examples", "model_test.pt")


def cache_dir() -> Path:
    """The zoo's own cache folder (converted weights): ``$CURE_ZOO_CACHE`` or ``~/.cache/cure_zoo``."""
    root = os.environ.get(CACHE_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "cure_zoo"
    )
    return Path(root)


def resolve_weights_file(cfg: PretrainedCfg, name: str, entry: ZooEntry | None = None) -> str | None:
    """A local weights file for ``cfg``; ``None`` when timm should use ``cfg.state_dict`` as given."""
    if cfg.state_dict is not None:
        return None
    if cfg.file and os.path.isdir(cfg.file):  # timm's ``local-dir:/path`` (a Hub snapshot or run directory)
        return str(local_dir_weights(Path(cfg.file), name))
    if cfg.file:
        if not os.path.isfile(cfg.file):
            raise PretrainedWeightsError(
                f"weights file {cfg.file!r} for {name} does not exist; check the path passed in "
                f"pretrained_cfg_overlay=dict(file=...)"
            )
        return str(cfg.file)
    if cfg.source == "pyautoattack":
        return str(pyautoattack_resnet18_file())
    if cfg.source == "package":
        return str(package_weights_file(entry, name))
    if cfg.hf_hub_id:
        if entry is not None and cfg.hf_hub_id == entry.hf_hub_id and not entry.published and not custom_org():
            # Nothing is published under the zoo's own org yet: say so without a network round trip.
            raise _unavailable(name, entry.repo_id, "the zoo has not published weights for this model yet")
        return str(download_verified(cfg.hf_hub_id, name))
    raise PretrainedWeightsError(
        f"{name} has no pretrained weights source; create it with pretrained=False, or load a local file "
        f"with pretrained_cfg_overlay=dict(file='model.safetensors')"
    )


def custom_org() -> bool:
    """Whether the user points registered names at their own Hub org (``CURE_ZOO_HF_ORG``)."""
    return os.environ.get(HF_ORG_ENV, DEFAULT_HF_ORG) != DEFAULT_HF_ORG


def _split_revision(hf_hub_id: str) -> tuple[str, str | None]:
    repo_id, _, revision = hf_hub_id.partition("@")
    return repo_id, revision or None


def _unavailable(name: str, repo_id: str, reason: str) -> PretrainedWeightsError:
    return PretrainedWeightsError(
        f"no pretrained weights for {name}: {WEIGHTS_FILE} could not be fetched from Hugging Face Hub repo "
        f"{repo_id!r} ({reason}). Ways out: train it (torchrun recipes/train.py --recipe "
        f"{name.split('.')[0]}) and publish it (cure-zoo push RUN_DIR --repo ORG/NAME, then set "
        f"CURE_ZOO_HF_ORG=ORG); or load a local file with "
        f"timm.create_model({name!r}, pretrained=True, pretrained_cfg_overlay=dict(file='model.safetensors'))"
    )


def hub_failure_reason(err: Exception) -> str:
    """One line for why a Hub download failed (never the token, never a traceback)."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(err, GatedRepoError):
        return "the repository is gated; accept its terms on the Hub and log in"
    if isinstance(err, RepositoryNotFoundError):
        return "repository not found, or private and no valid token was given (HF_TOKEN / hf auth login)"
    if isinstance(err, RevisionNotFoundError):
        return "the pinned revision does not exist in the repository"
    # LocalEntryNotFoundError subclasses EntryNotFoundError: test it first.
    if isinstance(err, LocalEntryNotFoundError):
        return "offline (HF_HUB_OFFLINE=1 or no network) and the file is not in the local Hugging Face cache"
    if isinstance(err, EntryNotFoundError):
        return f"the repository has no {WEIGHTS_FILE}"
    status = getattr(getattr(err, "response", None), "status_code", None)
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    return f"HTTP {status}: {text}" if status else text


def download_file(hf_hub_id: str, filename: str, name: str) -> Path:
    """One file of a Hub repo (``ORG/NAME[@revision]``) through the HF cache; one clear error on failure."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    repo_id, revision = _split_revision(hf_hub_id)
    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision))
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError) as err:
        if filename == WEIGHTS_FILE:
            raise _unavailable(name, repo_id, hub_failure_reason(err)) from None
        raise PretrainedWeightsError(
            f"{filename} of {name} could not be fetched from Hugging Face Hub repo {repo_id!r} "
            f"({hub_failure_reason(err)})"
        ) from None


def hub_config(hf_hub_id: str, name: str) -> dict:
    """The repo's ``config.json`` (from the HF cache when there), or ``{}`` when it has none or it is invalid."""
    try:
        return json.loads(download_file(hf_hub_id, CONFIG_FILE, name).read_text())
    except (PretrainedWeightsError, json.JSONDecodeError):
        return {}


def download_verified(hf_hub_id: str, name: str) -> Path:
    """Download ``model.safetensors`` (and ``config.json``) and check the published sha256."""
    repo_id, _ = _split_revision(hf_hub_id)
    weights = download_file(hf_hub_id, WEIGHTS_FILE, name)
    expected = (hub_config(hf_hub_id, name).get(CONFIG_BLOCK) or {}).get("weights_sha256")
    if expected:
        verify_sha256(weights, expected, f"{repo_id}/{WEIGHTS_FILE}")
    else:
        _logger.warning("%s: config.json publishes no weights_sha256; weights not verified", repo_id)
    return weights


def local_dir_weights(directory: Path, name: str) -> Path:
    """``model.safetensors`` of a local model folder, checked against its ``config.json`` like a download."""
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise PretrainedWeightsError(f"{directory} has no {WEIGHTS_FILE} for {name}; is it a model folder?")
    try:
        config = json.loads((directory / CONFIG_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        config = {}
    expected = described_sha256(config.get(CONFIG_BLOCK) or {}, weights.name)
    if expected:
        verify_sha256(weights, expected, str(weights))
    return weights


def verify_sha256(path: Path, expected: str, what: str) -> None:
    actual = sha256_file(path)
    if actual != expected:
        raise WeightsIntegrityError(
            f"{what} is corrupted or not the published file: sha256 {actual[:16]}... != published "
            f"{expected[:16]}... (size {path.stat().st_size} bytes); nothing was loaded. {_integrity_remedy(path)}"
        )


def _integrity_remedy(path: Path) -> str:
    """What to do about a file whose sha256 is wrong: a Hub download is fetched again; a local file is not
    in any cache, so deleting a cache entry would not help."""
    from huggingface_hub import constants

    if Path(os.path.realpath(path)).is_relative_to(os.path.realpath(constants.HF_HUB_CACHE)):
        return "Delete it from the Hugging Face cache (hf cache delete) and download again"
    return (
        f"It changed after the {CONFIG_FILE} beside it recorded its sha256: restore the original file, or "
        f"train or download the model again"
    )


def package_weights_file(entry: ZooEntry | None, name: str) -> Path:
    """``model.safetensors`` of a model shipped inside this package, checked against its pinned sha256."""
    if entry is None or entry.weights_source != "package":
        raise PretrainedWeightsError(f"{name} is not a model shipped inside cure_zoo; create it by its zoo name")
    weights = entry.bundled_dir / WEIGHTS_FILE
    if not entry.published or not weights.is_file():
        raise PretrainedWeightsError(
            f"no pretrained weights for {name}: this cure_zoo build does not ship them (they are made by "
            f"benchmarks/cifar10_5k/campaign.py; reinstall cure_zoo if the files were removed)"
        )
    verify_sha256(weights, entry.weights_sha256, f"{weights} (shipped with cure_zoo)")
    return weights


def shipped_weights_file(entry: ZooEntry) -> str | None:
    """Where the weights of an entry that ships them with a package lie (this package's bundled run
    directories, the pyautoattack wheel), if they are installed; None for Hub entries."""
    if entry.weights_source == "package":
        file = entry.bundled_dir / WEIGHTS_FILE
        return str(file) if entry.published and file.is_file() else None
    if entry.weights_source == "pyautoattack":
        spec = importlib.util.find_spec("pyautoattack")  # finds the package without importing it
        if spec is None or not spec.submodule_search_locations:
            return None
        file = Path(spec.submodule_search_locations[0]).joinpath(*PYAUTOATTACK_WEIGHTS)
        return str(file) if file.is_file() else None
    return None


def pyautoattack_resnet18_file() -> Path:
    """The ResNet-18 that ships in the pyautoattack wheel, converted to safetensors on first use."""
    try:
        version = metadata.version("pyautoattack")
        source = resources.files("pyautoattack").joinpath(*PYAUTOATTACK_WEIGHTS)
    except (metadata.PackageNotFoundError, ModuleNotFoundError):
        raise PretrainedWeightsError(
            "st_resnet18_cifar10.autoattack needs the pyautoattack package: pip install pyautoattack"
        ) from None
    where = "/".join(PYAUTOATTACK_WEIGHTS)
    if not source.is_file():
        raise PretrainedWeightsError(
            f"pyautoattack {version} has no {where}; reinstall it: pip install --force-reinstall pyautoattack"
        )
    target = cache_dir() / f"pyautoattack-{version}" / WEIGHTS_FILE
    with resources.as_file(source) as src:
        meta = {"source": f"pyautoattack=={version}:{where}", "source_sha256": sha256_file(src)}
        made_from = json.dumps(meta, sort_keys=True)
        if not read_checked(target, made_from):  # first use, or the cached file changed: convert again
            state_dict = torch.load(src, map_location="cpu", weights_only=True)
            record_checked(save_weights(state_dict, target, metadata=meta), made_from)
    return target
