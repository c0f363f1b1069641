"""The model registry, ``weights.toml``: every model colorvid knows, with its file's sha256 and size.

The registry is ``colorvid/weights.toml`` (the top-level ``weights.toml`` of the
repository is a symlink to it). Each model is either shipped inside the package
(``package_file``) or pinned to a commit of a Hugging Face Hub repository
(``hf_repo``, ``hf_filename``, ``hf_revision``); every entry carries the sha256
and size of its file, which :mod:`colorvid.weights` checks before the file is used.

Maintainers add an entry with::

    python -m colorvid.registry register colorvid/weights/NAME.safetensors NAME \\
        --license LICENSE --description TEXT [--default]

This module imports neither click nor torch at import time.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import TypedDict

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    # tomli is installed only on 3.10 (see pyproject), so pyright, checking for 3.10, may not find it.
    import tomli as tomllib  # pyright: ignore[reportMissingImports]

from colorvid import atomic
from colorvid.errors import ModelFileError, WeightsError

REGISTRY_ENV = "COLORVID_WEIGHTS_TOML"  # path of another registry to use instead of the shipped one
PACKAGE_REGISTRY = Path(__file__).with_name("weights.toml")

_HASH_CHUNK = 1 << 20  # bytes read at a time when hashing
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_COMMIT_RE = re.compile(r"[0-9a-f]{40}")
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]*")
_REPO_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
_PACKAGE_DIR = "weights"  # package_file entries live here: pyproject ships "weights/*.safetensors"
_COMMON_KEYS = ("architecture", "sha256", "license", "description")
_OPTIONAL_KEYS = ("size", "render_size", "speed")  # size is required of a package file only
# Speed classes, by frames/s end to end at 480p on a 2-core laptop CPU (benchmarks/model_families.py):
# "real-time" >= 24, "fast" >= 4, "slow" >= 0.2, "very slow" below.
SPEED_CLASSES = ("real-time", "fast", "slow", "very slow")
_PACKAGE_KEYS = ("package_file",)
_HUB_KEYS = ("hf_repo", "hf_filename", "hf_revision")


@dataclass(frozen=True)
class ModelEntry:
    """One ``[models.NAME]`` table of the registry."""

    name: str
    architecture: str
    sha256: str
    size: int | None  # bytes; None: not known in advance (a hub file; the sha256 decides)
    license: str
    description: str
    render_size: int | None = None  # the --render-size this model runs at by default; None: its family's
    speed: str | None = None  # one of SPEED_CLASSES
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

    def hub_location(self) -> tuple[str, str, str]:
        """(hf_repo, hf_filename, hf_revision) of a model on the hub: an entry has all three or none."""
        repo, filename, revision = self.hf_repo, self.hf_filename, self.hf_revision
        assert repo is not None and filename is not None and revision is not None, f"'{self.name}' is not on the hub"
        return repo, filename, revision

    def package_location(self) -> tuple[str, Path]:
        """(package_file, package_path) of a model shipped in the package: every entry not on the hub."""
        package_file, package_path = self.package_file, self.package_path
        assert package_file is not None and package_path is not None, f"'{self.name}' is not a package file"
        return package_file, package_path


class _CommonFields(TypedDict):
    """The ModelEntry fields every entry has."""

    name: str
    architecture: str
    sha256: str
    size: int | None
    license: str
    description: str
    render_size: int | None
    speed: str | None


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
    unknown = set(table) - set(_COMMON_KEYS) - set(_OPTIONAL_KEYS) - set(_PACKAGE_KEYS) - set(_HUB_KEYS)
    if unknown:
        raise bad(f"unknown key {sorted(unknown)[0]!r}")
    for key in _COMMON_KEYS:
        if key not in table:
            raise bad(f"missing {key!r}")
    for key in ("architecture", "sha256", "license", "description", "speed", *_PACKAGE_KEYS, *_HUB_KEYS):
        if key in table and not isinstance(table[key], str):
            raise bad(f"{key!r} must be a string")
    sha = table["sha256"]
    if not _SHA256_RE.fullmatch(sha):
        raise bad("'sha256' must be 64 lowercase hex digits")
    for key in ("size", "render_size"):
        value = table.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
            raise bad(f"{key!r} must be a positive integer" + (" (bytes)" if key == "size" else ""))
    if table.get("speed") is not None and table["speed"] not in SPEED_CLASSES:
        raise bad(f"'speed' must be one of {', '.join(map(repr, SPEED_CLASSES))}")
    common = _CommonFields(name=name, architecture=table["architecture"], sha256=sha, size=table.get("size"),
                           license=table["license"], description=table["description"],
                           render_size=table.get("render_size"), speed=table.get("speed"))

    has_package = "package_file" in table
    hub_keys = [k for k in _HUB_KEYS if k in table]
    if has_package == bool(hub_keys):
        raise bad("give either package_file or hf_repo, hf_filename and hf_revision")
    if has_package:
        if common["size"] is None:
            raise bad("missing 'size' (required of a package file)")
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
            repo, filename, revision = entry.hub_location()
            lines.append(f"hf_repo = {_toml_str(repo)}")
            lines.append(f"hf_filename = {_toml_str(filename)}")
            lines.append(f"hf_revision = {_toml_str(revision)}")
        else:
            package_file, _ = entry.package_location()
            lines.append(f"package_file = {_toml_str(package_file)}")
        lines.append(f"sha256 = {_toml_str(entry.sha256)}")
        if entry.size is not None:
            lines.append(f"size = {entry.size}")
        if entry.render_size is not None:
            lines.append(f"render_size = {entry.render_size}")
        if entry.speed is not None:
            lines.append(f"speed = {_toml_str(entry.speed)}")
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
#   python -m colorvid.registry register FILE NAME --license L --description D [--default]
# This file is rewritten by that command, so comments other than this header are lost.
#
# default = "NAME"           model used when none is named (optional)
# [models.NAME]              NAME: lowercase letters, digits, '.', '_', '-'
# architecture = "..."       family of the network (colorvid.models.FAMILIES: effnet-lite0-unet, ddcolor, deoldify)
# package_file = "weights/NAME.safetensors"
#                            a file shipped in the package, relative to this file's folder
#   or, for a file on the Hugging Face Hub (downloaded by `colorvid fetch-weights NAME`):
# hf_repo = "owner/name"
# hf_filename = "NAME.pth"
# hf_revision = "..."        full 40-hex commit sha (never a branch or tag)
# sha256 = "..."             64 hex digits, checked before every use
# size = 1234                bytes (optional for a hub file: then the hub's size is taken and the sha256 decides)
# render_size = 21           optional: the model's default --render-size, where not its family's
# speed = "slow"             optional: real-time, fast, slow or very slow (frames/s end to end at 480p on a
#                            2-core CPU: >= 24, >= 4, >= 0.2, below; benchmarks/model_families.py)
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


# --- maintainer command: python -m colorvid.registry register ---------------------


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
    render_size: int | None = None,
    speed: str | None = None,
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
    if speed is not None and speed not in SPEED_CLASSES:
        raise WeightsError(f"speed class '{speed}': choose from {', '.join(SPEED_CLASSES)}")
    common = _CommonFields(name=name, architecture=architecture, sha256=sha256_file(path), size=path.stat().st_size,
                           license=license, description=description, render_size=render_size, speed=speed)
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
        prog="python -m colorvid.registry", description="Maintain colorvid's model registry (weights.toml)."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    reg = commands.add_parser("register", help="add a weights file to the registry, with its sha256 and size")
    reg.add_argument("file", help="the weights file (for a package model: colorvid/weights/NAME.safetensors)")
    reg.add_argument("name", help="model name, e.g. colorvid-base")
    reg.add_argument("--license", required=True, help="license of the weights, e.g. MIT")
    reg.add_argument("--description", required=True, help="one line shown by `colorvid weights`")
    reg.add_argument("--default", action="store_true", help="make it the default model")
    reg.add_argument("--replace", action="store_true", help="replace an existing entry of that name")
    reg.add_argument("--registry", help=f"registry file (default: ${REGISTRY_ENV}, else {PACKAGE_REGISTRY})")
    reg.add_argument("--hf-repo", help="the file is on the Hugging Face Hub in this repository (owner/name)")
    reg.add_argument("--hf-revision", help="full commit sha of that repository holding the file")
    reg.add_argument("--hf-filename", help="file name in the repository (default: FILE's name)")
    reg.add_argument("--render-size", type=int, help="the model's default --render-size, where not its family's")
    reg.add_argument("--speed", choices=SPEED_CLASSES, help="speed class (see the registry's header)")
    args = parser.parse_args(argv)
    try:
        entry = register(
            args.file, args.name, license=args.license, description=args.description,
            registry_file=args.registry, make_default=args.default, replace_existing=args.replace,
            hf_repo=args.hf_repo, hf_revision=args.hf_revision, hf_filename=args.hf_filename,
            render_size=args.render_size, speed=args.speed,
        )
    except WeightsError as exc:
        print(f"colorvid.registry: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # writing the registry
        print(f"colorvid.registry: error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"registered '{entry.name}' in {registry_path(args.registry)}: {entry.size} bytes, sha256 {entry.sha256}, "
          f"from {entry.source}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
