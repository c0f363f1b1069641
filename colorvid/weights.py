"""Model weights: resolving a model name to a verified file, fetching it from the Hub, loading it.

Hub models are downloaded only by :func:`fetch` (``colorvid fetch-weights``)
into the huggingface_hub cache (``HF_HUB_CACHE``, else ``HF_HOME/hub``), at
the revision the registry (:mod:`colorvid.registry`) pins, and checked
against its sha256 and size. :func:`resolve` never touches the network: it
looks in that cache only.

This module imports neither click nor torch at import time.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from colorvid.errors import ModelFileError, WeightsError
from colorvid.registry import ModelEntry, Registry, load_registry, sha256_file

if TYPE_CHECKING:
    import torch

    from colorvid.models import Network

log = logging.getLogger("colorvid")

FETCH_COMMAND = "colorvid fetch-weights"

_SHA256_RE = re.compile(r"[0-9a-f]{64}")  # an ETag that is a file's sha256 (LFS files)
_TRUE_VALUES = {"1", "ON", "YES", "TRUE"}  # as huggingface_hub reads boolean variables


@dataclass(frozen=True)
class ModelRow:
    """One line of :func:`list_models`."""

    name: str
    family: str  # the architecture
    size: int | None  # bytes; None: not known until downloaded
    license: str
    installed: bool  # present on disk (the hash is checked on use, not here)
    default: bool
    description: str
    location: str  # the local file if installed, else where fetch-weights gets it
    speed: str | None  # speed class (registry.SPEED_CLASSES)
    render_size: int | None  # the registry's default --render-size; None: the family's


# --- verifying ---------------------------------------------------------------------


def _mismatch(entry: ModelEntry, path: Path) -> str | None:
    """None if ``path`` has the entry's size (where known) and sha256, else what differs."""
    size = path.stat().st_size
    if entry.size is not None and size != entry.size:
        return f"size {size} bytes, expected {entry.size}"
    actual = sha256_file(path)
    if actual != entry.sha256:
        return f"sha256 {actual}, expected {entry.sha256}"
    return None


# --- the huggingface_hub cache and endpoint ---------------------------------------


def hub_cache_dir() -> Path:
    """The huggingface_hub cache, read from the environment now (huggingface_hub reads it once at import)."""
    env = os.environ
    cache = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE")
    if not cache:
        cache_home = env.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
        home = env.get("HF_HOME") or os.path.join(cache_home, "huggingface")
        cache = os.path.join(home, "hub")
    return Path(os.path.expandvars(os.path.expanduser(cache)))


def hub_endpoint() -> str:
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def hub_offline() -> bool:
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return env.upper() in _TRUE_VALUES or bool(constants.HF_HUB_OFFLINE)


def _cached_file(entry: ModelEntry, cache_dir: Path) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    repo, filename, revision = entry.hub_location()
    found = try_to_load_from_cache(repo, filename, cache_dir=str(cache_dir), revision=revision)
    return Path(found) if isinstance(found, str) else None


def _evict(pointer: Path, cache_dir: Path) -> None:
    """Delete a cached file: its snapshot link and the blob it points to (only if inside the cache)."""
    blob = Path(os.path.realpath(pointer))
    pointer.unlink(missing_ok=True)
    if blob != pointer and blob.is_relative_to(Path(os.path.realpath(cache_dir))):
        blob.unlink(missing_ok=True)


def _not_downloaded(name: str, offline: bool) -> WeightsError:
    message = f"model '{name}' is not downloaded; run: {FETCH_COMMAND} {name}"
    if offline:
        message += " (HF_HUB_OFFLINE is set: unset it for that command)"
    return WeightsError(message)


# --- resolve, fetch, list, open ------------------------------------------------


def resolve(
    name_or_path: str | os.PathLike,
    registry: Registry | None = None,
    offline: bool | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    """The verified local file of a model name or a weights file path. Never uses the network.

    A registry name is that model: a package file is hashed, a hub model is
    looked up in the huggingface_hub cache and hashed. Anything else is the path
    of a weights file, which is checked to be a colorvid model (a file named like
    a model is reached as ./NAME).

    Args:
        offline: only changes the hint given for an undownloaded hub model;
            None reads HF_HUB_OFFLINE.

    Raises:
        WeightsError: unknown name, missing or damaged file, hub model not downloaded.
    """
    return _resolve(name_or_path, registry, offline, cache_dir, check_file=True)


def _resolve(name_or_path, registry, offline, cache_dir, check_file: bool) -> Path:
    text = os.fspath(name_or_path)
    registry = registry if registry is not None else load_registry()
    if text in registry.models:
        return _resolve_entry(registry.models[text], offline, cache_dir)
    path = Path(text).expanduser()
    if path.is_file():
        if check_file:
            _check_model_file(path)
        return path
    if path.exists():
        raise WeightsError(f"{path}: not a file")
    if "/" in text or os.sep in text or path.suffix:
        raise WeightsError(f"{path}: no such weights file")
    raise WeightsError(f"unknown model '{text}' ({registry._known()}; or give the path of a weights file)")


def _resolve_entry(entry: ModelEntry, offline: bool | None, cache_dir) -> Path:
    from colorvid.models import FAMILIES

    if entry.architecture not in FAMILIES:
        raise WeightsError(
            f"model '{entry.name}' is a {entry.architecture!r} network; this colorvid loads "
            f"{', '.join(map(repr, FAMILIES))}"
        )
    if not entry.on_hub:
        return _verified_package_file(entry)
    cache = Path(cache_dir) if cache_dir is not None else hub_cache_dir()
    path = _cached_file(entry, cache)
    if path is None:
        raise _not_downloaded(entry.name, hub_offline() if offline is None else offline)
    problem = _mismatch(entry, path)
    if problem:
        raise WeightsError(
            f"model '{entry.name}': cached file {path} is damaged ({problem}); run: {FETCH_COMMAND} {entry.name}"
        )
    return path


def _verified_package_file(entry: ModelEntry) -> Path:
    _, path = entry.package_location()
    if not path.is_file():
        raise WeightsError(f"model '{entry.name}': {path} is missing from the installation (reinstall colorvid)")
    problem = _mismatch(entry, path)
    if problem:
        raise WeightsError(f"model '{entry.name}': {path} is damaged ({problem}); reinstall colorvid")
    return path


def _check_model_file(path: Path) -> None:
    from colorvid.models import check_model_file

    try:
        check_model_file(path)
    except ModelFileError as exc:
        raise WeightsError(f"{path}: {exc}") from None


def fetch(
    name: str,
    registry: Registry | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> Path:
    """Download a hub model into the huggingface_hub cache (if not there yet) and verify it.

    A package model needs no download: its file is verified and returned. A
    cached file that fails verification is deleted and downloaded again; a
    download that fails verification is deleted from the cache.

    Args:
        cache_dir: the huggingface_hub cache; default $HF_HUB_CACHE, else $HF_HOME/hub.
        progress: show huggingface_hub's progress bar (on stderr).

    Raises:
        WeightsError: unknown name, offline, network or HTTP failure, hash mismatch.
    """
    registry = registry if registry is not None else load_registry()
    entry = registry.get(name)
    if not entry.on_hub:
        return _verified_package_file(entry)
    cache = Path(cache_dir) if cache_dir is not None else hub_cache_dir()
    cached = _cached_file(entry, cache)
    if cached is not None:
        problem = _mismatch(entry, cached)
        if problem is None:
            return cached
        log.warning("model '%s': cached file %s is damaged (%s); downloading it again", name, cached, problem)
        _evict(cached, cache)
    if hub_offline():
        raise WeightsError(
            f"model '{name}' is not downloaded and HF_HUB_OFFLINE is set, which forbids downloading; "
            f"unset HF_HUB_OFFLINE and run: {FETCH_COMMAND} {name}"
        )
    endpoint = hub_endpoint()
    _check_remote(entry, endpoint)
    from huggingface_hub import hf_hub_download

    repo, filename, revision = entry.hub_location()
    try:
        path = Path(hf_hub_download(
            repo, filename, revision=revision, cache_dir=str(cache),
            endpoint=endpoint, tqdm_class=None if progress else _silent_bar_class(),
        ))
    except Exception as exc:  # noqa: BLE001 - mapped to one line, or re-raised if not a download failure
        raise _download_error(entry, endpoint, exc) from None
    problem = _mismatch(entry, path)
    if problem:
        _evict(path, cache)
        raise WeightsError(
            f"model '{name}': the file downloaded from {endpoint} has {problem}; deleted it from the cache"
        )
    return path


def _silent_bar_class() -> type:
    from tqdm import tqdm

    class SilentBar(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return SilentBar


def _check_remote(entry: ModelEntry, endpoint: str) -> None:
    """Ask the hub for the file's metadata (one HEAD, no retries) before downloading.

    This fails fast when the endpoint cannot be reached (hf_hub_download retries
    for about 20 s first) and refuses a file the hub itself says is not ours.
    """
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    repo, filename, revision = entry.hub_location()
    url = hf_hub_url(repo, filename, revision=revision, endpoint=endpoint)
    try:
        meta = get_hf_file_metadata(url, timeout=_etag_timeout(), endpoint=endpoint)
    except Exception as exc:  # noqa: BLE001
        raise _download_error(entry, endpoint, exc) from None
    if meta.size is not None and entry.size is not None and meta.size != entry.size:
        raise WeightsError(
            f"model '{entry.name}': {endpoint} serves {entry.hf_repo}/{entry.hf_filename} with {meta.size} bytes, "
            f"expected {entry.size}; not downloading"
        )
    if meta.etag and _SHA256_RE.fullmatch(meta.etag) and meta.etag != entry.sha256:
        raise WeightsError(
            f"model '{entry.name}': {endpoint} reports sha256 {meta.etag} for {entry.hf_repo}/{entry.hf_filename}, "
            f"expected {entry.sha256}; not downloading"
        )


def _etag_timeout() -> float:
    try:
        return float(os.environ.get("HF_HUB_ETAG_TIMEOUT") or 10)
    except ValueError:
        return 10.0


def _download_error(entry: ModelEntry, endpoint: str, exc: Exception) -> WeightsError:
    """One-line WeightsError for an exception from huggingface_hub; re-raises anything else."""
    from huggingface_hub import errors as hf

    repo, _, revision = entry.hub_location()
    where = f"{repo}@{revision[:12]}"
    prefix = f"model '{entry.name}'"
    if isinstance(exc, hf.OfflineModeIsEnabled):
        return WeightsError(
            f"{prefix} cannot be downloaded: HF_HUB_OFFLINE is set; unset it and run: {FETCH_COMMAND} {entry.name}"
        )
    if isinstance(exc, hf.GatedRepoError):
        return WeightsError(f"{prefix}: {entry.hf_repo} on {endpoint} is gated; accept its terms and set HF_TOKEN")
    if isinstance(exc, hf.RepositoryNotFoundError):
        return WeightsError(f"{prefix}: repository {entry.hf_repo} not found on {endpoint} (or private: set HF_TOKEN)")
    if isinstance(exc, hf.RevisionNotFoundError):
        return WeightsError(f"{prefix}: revision {entry.hf_revision} not found in {entry.hf_repo} on {endpoint}")
    if isinstance(exc, hf.EntryNotFoundError) and not isinstance(exc, hf.LocalEntryNotFoundError):
        return WeightsError(f"{prefix}: {entry.hf_filename} not found in {where} on {endpoint}")
    if isinstance(exc, hf.HfHubHTTPError):
        status = getattr(getattr(exc, "response", None), "status_code", "error")
        return WeightsError(f"{prefix}: {endpoint} answered HTTP {status} for {where}/{entry.hf_filename}")
    if isinstance(exc, hf.FileMetadataError):
        return WeightsError(f"{prefix}: {endpoint} does not answer like a Hugging Face Hub (check HF_ENDPOINT)")
    if _is_network_error(exc):
        return WeightsError(f"{prefix}: cannot download from {endpoint}: {_cause(exc)}")
    raise exc


def _is_network_error(exc: BaseException) -> bool:
    """Connection, timeout and I/O failures, whichever HTTP library huggingface_hub uses."""
    if isinstance(exc, (OSError, ConnectionError, TimeoutError)):
        return True
    transport_libs = {"httpx", "httpx2", "httpcore", "requests", "urllib3"}
    return any(cls.__module__.split(".")[0] in transport_libs for cls in type(exc).__mro__)


def _cause(exc: BaseException) -> str:
    """The innermost useful message of an exception chain, on one line."""
    while exc.__cause__ is not None and not str(exc):
        exc = exc.__cause__
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    if "timed out" in text.lower() or "timeout" in type(exc).__name__.lower():
        return f"timed out ({text})"
    return text


def list_models(registry: Registry | None = None, *, cache_dir: str | os.PathLike | None = None) -> list[ModelRow]:
    """One row per registry model, by name. ``installed`` means present on disk; hashes are not checked."""
    registry = registry if registry is not None else load_registry()
    cache = Path(cache_dir) if cache_dir is not None else hub_cache_dir()
    rows = []
    for name in sorted(registry.models):
        entry = registry.models[name]
        if entry.on_hub:
            local = _cached_file(entry, cache)
        else:
            _, package_path = entry.package_location()
            local = package_path if package_path.is_file() else None
        size = entry.size if entry.size is not None or local is None else local.stat().st_size
        rows.append(ModelRow(
            name=name, family=entry.architecture, size=size, license=entry.license, installed=local is not None,
            default=name == registry.default, description=entry.description,
            location=str(local) if local is not None else entry.source,
            speed=entry.speed, render_size=entry.render_size,
        ))
    return rows


@dataclass
class ModelFile:
    """A located, verified weights file, and the registry entry it was found by (None for a path)."""

    path: Path
    entry: ModelEntry | None
    _sha256: str | None = field(default=None, repr=False)

    @property
    def sha256(self) -> str:
        """The file's sha256 (a registry file's, verified when it was located)."""
        if self._sha256 is None:
            self._sha256 = self.entry.sha256 if self.entry is not None else sha256_file(self.path)
        return self._sha256

    def load(
        self,
        device: torch.device | str = "cpu",
        half: bool = False,
        *,
        fuse: bool = True,
        optimize: bool = False,
        render_size: int | None = None,
    ) -> Network:
        """The network, loaded for inference (see :func:`colorvid.models.load_model`); ``render_size``
        None is the registry entry's default, else the family's.

        Raises:
            WeightsError: the file is not a model this colorvid can load.
            ValueError: ``render_size`` does not fit the model's family.
        """
        from colorvid.models import load_model

        from_registry = render_size is None and self.entry is not None and self.entry.render_size is not None
        if from_registry:
            assert self.entry is not None
            render_size = self.entry.render_size
        try:
            return load_model(self.path, device=device, half=half, fuse=fuse, optimize=optimize,
                              render_size=render_size)
        except ModelFileError as exc:
            raise WeightsError(f"{self.path}: {exc}") from None
        except ValueError as exc:
            if not from_registry:
                raise
            assert self.entry is not None
            raise WeightsError(f"model '{self.entry.name}': the registry's render_size does not fit: {exc}") from None


def locate(name_or_path: str | os.PathLike | None = None, registry: Registry | None = None) -> ModelFile:
    """The file of a model name (None = the registry default) or path, verified as :func:`resolve`
    does, except that a path is not read here (loading it checks it).

    Raises:
        WeightsError: as :func:`resolve`.
    """
    registry = registry if registry is not None else load_registry()
    if name_or_path is None:
        name_or_path = registry.default_name()
    path = _resolve(name_or_path, registry, None, None, check_file=False)
    return ModelFile(path, registry.models.get(os.fspath(name_or_path)))


def open_model(
    name_or_path: str | os.PathLike | None = None,
    device: torch.device | str = "cpu",
    half: bool = False,
    *,
    fuse: bool = True,
    optimize: bool = False,
    render_size: int | None = None,
    registry: Registry | None = None,
) -> Network:
    """Resolve a model (None = the registry default) and load it for inference (see :meth:`ModelFile.load`).

    Raises:
        WeightsError: as :func:`resolve`, or the file is not a model this colorvid can load.
        ValueError: ``render_size`` does not fit the model's family.
    """
    return locate(name_or_path, registry).load(device, half, fuse=fuse, optimize=optimize, render_size=render_size)
