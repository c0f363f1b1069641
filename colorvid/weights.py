"""Model weights: the registry (weights.toml), fetching, caching and verification.

The registry is ``colorvid/weights.toml`` (the top-level ``weights.toml`` of the
repository is a symlink to it). Each model is either shipped inside the package
(``package_file``) or pinned to a commit of a Hugging Face Hub repository
(``hf_repo``, ``hf_filename``, ``hf_revision``); every entry carries the sha256
and size of its file, which are checked before the file is used.

Hub models are downloaded only by :func:`fetch` (``colorvid fetch-weights``)
into the huggingface_hub cache (``HF_HUB_CACHE``, else ``HF_HOME/hub``).
:func:`resolve` never touches the network: it looks in that cache only.

Maintainers add an entry with::

    python -m colorvid.weights register colorvid/weights/NAME.safetensors NAME \\
        --license LICENSE --description TEXT [--default]

This module imports neither click nor torch at import time.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Mapping

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

from colorvid import atomic
from colorvid.errors import ModelFileError, WeightsError

log = logging.getLogger("colorvid")

REGISTRY_ENV = "COLORVID_WEIGHTS_TOML"  # path of another registry to use instead of the shipped one
PACKAGE_REGISTRY = Path(__file__).with_name("weights.toml")
FETCH_COMMAND = "colorvid fetch-weights"

_HASH_CHUNK = 1 << 20  # bytes read at a time when hashing
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_COMMIT_RE = re.compile(r"[0-9a-f]{40}")
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]*")
_REPO_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
_PACKAGE_DIR = "weights"  # package_file entries live here: pyproject ships "weights/*.safetensors"
_COMMON_KEYS = ("architecture", "sha256", "size", "license", "description")
_PACKAGE_KEYS = ("package_file",)
_HUB_KEYS = ("hf_repo", "hf_filename", "hf_revision")
_TRUE_VALUES = {"1", "ON", "YES", "TRUE"}  # as huggingface_hub reads boolean variables


@dataclass(frozen=True)
class ModelEntry:
    """One ``[models.NAME]`` table of the registry."""

    name: str
    architecture: str
    sha256: str
    size: int  # bytes
    license: str
    description: str
    package_file: str | None = None  # as written, relative to the registry's folder
    package_path: Path | None = None  # package_file made absolute
    hf_repo: str | None = None
    hf_filename: str | None = None
    hf_revision: str | None = None  # full commit sha

    @property
    def on_hub(self) -> bool:
        return self.hf_repo is not None

    @property
    def source(self) -> str:
        """Where the file comes from, for messages."""
        if self.on_hub:
            return f"hf://{self.hf_repo}@{self.hf_revision}/{self.hf_filename}"
        return str(self.package_path)


@dataclass(frozen=True)
class Registry:
    path: Path
    models: Mapping[str, ModelEntry] = field(default_factory=dict)
    default: str | None = None

    def get(self, name: str) -> ModelEntry:
        """The entry called ``name``; an unknown name lists the known ones."""
        try:
            return self.models[name]
        except KeyError:
            raise WeightsError(f"unknown model '{name}' ({self._known()})") from None

    def default_name(self) -> str:
        if self.default is None:
            raise WeightsError(f"no default model: {self.path} sets no 'default'; name a model")
        return self.default

    def _known(self) -> str:
        if not self.models:
            return f"{self.path} lists no models"
        return "known: " + ", ".join(sorted(self.models))


@dataclass(frozen=True)
class ModelRow:
    """One line of :func:`list_models`."""

    name: str
    size: int  # bytes
    license: str
    installed: bool  # present on disk (the hash is checked on use, not here)
    default: bool
    description: str
    location: str  # the local file if installed, else where fetch-weights gets it


# --- registry ----------------------------------------------------------------


def registry_path(path: str | os.PathLike | None = None) -> Path:
    """The registry file: ``path``, else $COLORVID_WEIGHTS_TOML, else the shipped one."""
    if path is not None:
        return Path(path)
    env = os.environ.get(REGISTRY_ENV)
    return Path(env) if env else PACKAGE_REGISTRY


def load_registry(path: str | os.PathLike | None = None) -> Registry:
    """Read and validate a weights.toml (see :func:`registry_path` for which one).

    Raises:
        WeightsError: the file cannot be read, is not TOML, or breaks the schema.
    """
    path = registry_path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise WeightsError(f"cannot read model registry {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise WeightsError(f"{path}: not valid TOML ({exc})") from None
    return _parse_registry(path, text)


def _parse_registry(path: Path, text: str) -> Registry:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise WeightsError(f"{path}: not valid TOML ({exc})") from None
    # package_file is relative to the folder of the real file, not of a symlink to it
    root = path.resolve().parent
    unknown = set(data) - {"default", "models"}
    if unknown:
        raise WeightsError(f"{path}: unknown top-level key {sorted(unknown)[0]!r} (expected 'default' and [models])")
    tables = data.get("models", {})
    if not isinstance(tables, dict):
        raise WeightsError(f"{path}: 'models' must be a table of [models.NAME] tables")
    models = {name: _parse_entry(path, root, name, table) for name, table in tables.items()}
    default = data.get("default")
    if default is not None and default not in models:
        raise WeightsError(f"{path}: default model '{default}' is not listed under [models]")
    return Registry(path=path, models=models, default=default)


def _parse_entry(path: Path, root: Path, name: str, table: object) -> ModelEntry:
    def bad(problem: str) -> WeightsError:
        return WeightsError(f"{path}: model '{name}': {problem}")

    if not _NAME_RE.fullmatch(name):
        raise bad("names use lowercase letters, digits, '.', '_' and '-'")
    if not isinstance(table, dict):
        raise bad("must be a table")
    unknown = set(table) - set(_COMMON_KEYS) - set(_PACKAGE_KEYS) - set(_HUB_KEYS)
    if unknown:
        raise bad(f"unknown key {sorted(unknown)[0]!r}")
    for key in _COMMON_KEYS:
        if key not in table:
            raise bad(f"missing {key!r}")
    for key in ("architecture", "sha256", "license", "description", *_PACKAGE_KEYS, *_HUB_KEYS):
        if key in table and not isinstance(table[key], str):
            raise bad(f"{key!r} must be a string")
    sha = table["sha256"]
    if not _SHA256_RE.fullmatch(sha):
        raise bad("'sha256' must be 64 lowercase hex digits")
    size = table["size"]
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        raise bad("'size' must be a positive integer (bytes)")
    common = dict(name=name, architecture=table["architecture"], sha256=sha, size=size,
                  license=table["license"], description=table["description"])

    has_package = "package_file" in table
    hub_keys = [k for k in _HUB_KEYS if k in table]
    if has_package == bool(hub_keys):
        raise bad("give either package_file or hf_repo, hf_filename and hf_revision")
    if has_package:
        rel = PurePosixPath(table["package_file"])
        if rel.is_absolute() or ".." in rel.parts or not rel.parts:
            raise bad("'package_file' must be a path inside the package, like 'weights/NAME.safetensors'")
        return ModelEntry(**common, package_file=str(rel), package_path=root.joinpath(*rel.parts))
    if len(hub_keys) != len(_HUB_KEYS):
        missing = [k for k in _HUB_KEYS if k not in table]
        raise bad(f"missing {missing[0]!r}")
    if not _REPO_RE.fullmatch(table["hf_repo"]):
        raise bad("'hf_repo' must look like 'owner/name'")
    if not _COMMIT_RE.fullmatch(table["hf_revision"]):
        raise bad("'hf_revision' must be a full 40-hex commit sha, not a branch or tag")
    return ModelEntry(**common, hf_repo=table["hf_repo"], hf_filename=table["hf_filename"],
                      hf_revision=table["hf_revision"])


def dump_registry(registry: Registry) -> str:
    """The TOML text of ``registry``: the schema as comments, then ``default``, then the models."""
    lines = [line.rstrip() for line in _REGISTRY_HEADER.splitlines()] + [""]
    if registry.default is not None:
        lines += [f"default = {_toml_str(registry.default)}", ""]
    if not registry.models:
        lines += ["[models]", ""]
    for entry in sorted(registry.models.values(), key=lambda e: e.name):
        key = entry.name if re.fullmatch(r"[A-Za-z0-9_-]+", entry.name) else _toml_str(entry.name)
        lines.append(f"[models.{key}]")
        lines.append(f"architecture = {_toml_str(entry.architecture)}")
        if entry.on_hub:
            lines.append(f"hf_repo = {_toml_str(entry.hf_repo)}")
            lines.append(f"hf_filename = {_toml_str(entry.hf_filename)}")
            lines.append(f"hf_revision = {_toml_str(entry.hf_revision)}")
        else:
            lines.append(f"package_file = {_toml_str(entry.package_file)}")
        lines.append(f"sha256 = {_toml_str(entry.sha256)}")
        lines.append(f"size = {entry.size}")
        lines.append(f"license = {_toml_str(entry.license)}")
        lines.append(f"description = {_toml_str(entry.description)}")
        lines.append("")
    return "\n".join(lines)


def _toml_str(value: str) -> str:
    # A JSON string without '\/' is a valid TOML basic string.
    return json.dumps(value, ensure_ascii=False)


_REGISTRY_HEADER = """\
# colorvid model registry. colorvid reads colorvid/weights.toml (shipped as
# package data); the top-level weights.toml of the repository links to it.
# Add or replace an entry with (it computes sha256 and size):
#   python -m colorvid.weights register FILE NAME --license L --description D [--default]
# This file is rewritten by that command, so comments other than this header are lost.
#
# default = "NAME"           model used when none is named (optional)
# [models.NAME]              NAME: lowercase letters, digits, '.', '_', '-'
# architecture = "..."       network the file is for (colorvid.models.effnet_unet.ARCHITECTURE)
# package_file = "weights/NAME.safetensors"
#                            a file shipped in the package, relative to this file's folder
#   or, for a file on the Hugging Face Hub (downloaded by `colorvid fetch-weights NAME`):
# hf_repo = "owner/name"
# hf_filename = "NAME.safetensors"
# hf_revision = "..."        full 40-hex commit sha (never a branch or tag)
# sha256 = "..."             64 hex digits, checked before every use
# size = 1234                bytes
# license = "..."            license of the weights
# description = "..."
"""


# --- hashing -------------------------------------------------------------------


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _mismatch(entry: ModelEntry, path: Path) -> str | None:
    """None if ``path`` has the entry's size and sha256, else what differs."""
    size = path.stat().st_size
    if size != entry.size:
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
        home = env.get("HF_HOME") or os.path.join(env.get("XDG_CACHE_HOME") or os.path.join("~", ".cache"), "huggingface")
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

    found = try_to_load_from_cache(entry.hf_repo, entry.hf_filename, cache_dir=str(cache_dir), revision=entry.hf_revision)
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
        raise WeightsError(f"model '{entry.name}': cached file {path} is damaged ({problem}); run: {FETCH_COMMAND} {entry.name}")
    return path


def _verified_package_file(entry: ModelEntry) -> Path:
    path = entry.package_path
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

    try:
        path = Path(hf_hub_download(
            entry.hf_repo, entry.hf_filename, revision=entry.hf_revision, cache_dir=str(cache),
            endpoint=endpoint, tqdm_class=None if progress else _silent_bar_class(),
        ))
    except Exception as exc:  # noqa: BLE001 - mapped to one line, or re-raised if not a download failure
        raise _download_error(entry, endpoint, exc) from None
    problem = _mismatch(entry, path)
    if problem:
        _evict(path, cache)
        raise WeightsError(f"model '{name}': the file downloaded from {endpoint} has {problem}; deleted it from the cache")
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

    url = hf_hub_url(entry.hf_repo, entry.hf_filename, revision=entry.hf_revision, endpoint=endpoint)
    try:
        meta = get_hf_file_metadata(url, timeout=_etag_timeout(), endpoint=endpoint)
    except Exception as exc:  # noqa: BLE001
        raise _download_error(entry, endpoint, exc) from None
    if meta.size is not None and meta.size != entry.size:
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

    where = f"{entry.hf_repo}@{entry.hf_revision[:12]}"
    prefix = f"model '{entry.name}'"
    if isinstance(exc, hf.OfflineModeIsEnabled):
        return WeightsError(f"{prefix} cannot be downloaded: HF_HUB_OFFLINE is set; unset it and run: {FETCH_COMMAND} {entry.name}")
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
            local = entry.package_path if entry.package_path.is_file() else None
        rows.append(ModelRow(
            name=name, size=entry.size, license=entry.license, installed=local is not None,
            default=name == registry.default, description=entry.description,
            location=str(local) if local is not None else entry.source,
        ))
    return rows


def open_model(
    name_or_path: str | os.PathLike | None = None,
    device="cpu",
    half: bool = False,
    *,
    fuse: bool = True,
    optimize: bool = False,
    registry: Registry | None = None,
):
    """Resolve a model (None = the registry default) and load it for inference
    (see :func:`colorvid.models.load_model` for ``fuse`` and ``optimize``).

    Raises:
        WeightsError: as :func:`resolve`, or the file is not a model this colorvid can load.
    """
    from colorvid.models import load_model

    registry = registry if registry is not None else load_registry()
    if name_or_path is None:
        name_or_path = registry.default_name()
    path = _resolve(name_or_path, registry, None, None, check_file=False)  # load_model checks the file
    try:
        return load_model(path, device=device, half=half, fuse=fuse, optimize=optimize)
    except ModelFileError as exc:
        raise WeightsError(f"{path}: {exc}") from None


# --- maintainer command: python -m colorvid.weights register ----------------------


def register(
    file: str | os.PathLike,
    name: str,
    *,
    license: str,
    description: str,
    registry_file: str | os.PathLike | None = None,
    make_default: bool = False,
    replace_existing: bool = False,
    hf_repo: str | None = None,
    hf_revision: str | None = None,
    hf_filename: str | None = None,
) -> ModelEntry:
    """Add ``file`` to a registry as model ``name`` (sha256, size and architecture read from the file).

    Without ``hf_repo`` the file must already lie in the package, at
    ``weights/NAME.safetensors`` beside the registry, where pyproject's
    package-data ships it. With ``hf_repo`` it is the local copy of the file
    uploaded to that repository at commit ``hf_revision``.
    """
    from colorvid.models import check_model_file

    path = Path(file).resolve()
    reg_path = registry_path(registry_file)
    registry = load_registry(reg_path)
    if not _NAME_RE.fullmatch(name):
        raise WeightsError(f"model name '{name}': use lowercase letters, digits, '.', '_' and '-'")
    if name in registry.models and not replace_existing:
        raise WeightsError(f"{reg_path} already lists model '{name}' (use --replace)")
    if not path.is_file():
        raise WeightsError(f"{path}: no such file")
    try:
        architecture = check_model_file(path)
    except ModelFileError as exc:
        raise WeightsError(f"{path}: {exc}") from None
    common = dict(name=name, architecture=architecture, sha256=sha256_file(path), size=path.stat().st_size,
                  license=license, description=description)
    if hf_repo is None:
        if hf_revision is not None or hf_filename is not None:
            raise WeightsError("--hf-revision and --hf-filename need --hf-repo")
        root = reg_path.resolve().parent
        try:
            rel = path.relative_to(root)
        except ValueError:
            rel = None
        if rel is None or rel.parent != Path(_PACKAGE_DIR) or rel.suffix != ".safetensors":
            raise WeightsError(f"{path}: a package model must be at {root / _PACKAGE_DIR}/NAME.safetensors")
        entry = ModelEntry(**common, package_file=rel.as_posix(), package_path=path)
    else:
        if hf_revision is None:
            raise WeightsError("--hf-repo needs --hf-revision, the full commit sha holding the file")
        entry = ModelEntry(**common, hf_repo=hf_repo, hf_filename=hf_filename or path.name, hf_revision=hf_revision)
    models = dict(registry.models)
    models[name] = entry
    new = replace(registry, models=models, default=name if make_default else registry.default)
    text = dump_registry(new)
    _parse_registry(reg_path, text)  # check what will be written exactly as colorvid will read it
    atomic.write_text(reg_path, text)
    return load_registry(reg_path).models[name]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m colorvid.weights", description="Maintain colorvid's model registry (weights.toml)."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    reg = commands.add_parser("register", help="add a weights file to the registry, with its sha256 and size")
    reg.add_argument("file", help="the .safetensors file (for a package model: colorvid/weights/NAME.safetensors)")
    reg.add_argument("name", help="model name, e.g. colorvid-base")
    reg.add_argument("--license", required=True, help="license of the weights, e.g. MIT")
    reg.add_argument("--description", required=True, help="one line shown by `colorvid weights`")
    reg.add_argument("--default", action="store_true", help="make it the default model")
    reg.add_argument("--replace", action="store_true", help="replace an existing entry of that name")
    reg.add_argument("--registry", help=f"registry file (default: ${REGISTRY_ENV}, else {PACKAGE_REGISTRY})")
    reg.add_argument("--hf-repo", help="the file is on the Hugging Face Hub in this repository (owner/name)")
    reg.add_argument("--hf-revision", help="full commit sha of that repository holding the file")
    reg.add_argument("--hf-filename", help="file name in the repository (default: FILE's name)")
    args = parser.parse_args(argv)
    try:
        entry = register(
            args.file, args.name, license=args.license, description=args.description,
            registry_file=args.registry, make_default=args.default, replace_existing=args.replace,
            hf_repo=args.hf_repo, hf_revision=args.hf_revision, hf_filename=args.hf_filename,
        )
    except WeightsError as exc:
        print(f"colorvid.weights: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # writing the registry
        print(f"colorvid.weights: error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"registered '{entry.name}' in {registry_path(args.registry)}: {entry.size} bytes, sha256 {entry.sha256}, "
          f"from {entry.source}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
