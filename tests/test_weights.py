"""Weights registry, fetch, cache and verification.

Hub downloads go through huggingface_hub's real code against FakeHub (fake_hub.py,
served by the ``hub`` fixture of conftest.py), a small HTTP server on 127.0.0.1
that answers the Hub's resolve API. The model is the ``tiny_model`` fixture (a
random-initialised Colorizer); nothing depends on the shipped weights.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import time
from pathlib import Path

import pytest
from fake_hub import HUB_FILE, HUB_REPO, HUB_REVISION, cached_files

from colorvid import registry as model_registry
from colorvid import weights
from colorvid.errors import WeightsError

REPO_ROOT = Path(__file__).resolve().parents[1]


# --- fixtures --------------------------------------------------------------------


@pytest.fixture(scope="session")
def model_sha(tiny_model) -> str:
    return hashlib.sha256(tiny_model.read_bytes()).hexdigest()


def write_registry(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "weights.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def registry(tmp_path, monkeypatch, tiny_model, model_sha) -> model_registry.Registry:
    """A registry with a hub model 'hubby' (default) and a package model 'packed', set as COLORVID_WEIGHTS_TOML."""
    from colorvid.models.effnet_unet import ARCHITECTURE

    folder = tmp_path / "pkg"
    (folder / "weights").mkdir(parents=True)
    shutil.copyfile(tiny_model, folder / "weights" / "packed.safetensors")
    size = tiny_model.stat().st_size
    path = write_registry(folder, f"""
default = "hubby"

[models.hubby]
architecture = "{ARCHITECTURE}"
hf_repo = "{HUB_REPO}"
hf_filename = "{HUB_FILE}"
hf_revision = "{HUB_REVISION}"
sha256 = "{model_sha}"
size = {size}
license = "MIT"
description = "random weights on the hub"

[models.packed]
architecture = "{ARCHITECTURE}"
package_file = "weights/packed.safetensors"
sha256 = "{model_sha}"
size = {size}
license = "Apache-2.0"
description = "random weights in the package"
""")
    monkeypatch.setenv(model_registry.REGISTRY_ENV, str(path))
    return model_registry.load_registry()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- registry ------------------------------------------------------------------------


def test_shipped_registry_is_valid_and_its_files_verify():
    registry = model_registry.load_registry(model_registry.PACKAGE_REGISTRY)
    for entry in registry.models.values():
        if not entry.on_hub:  # shipped files must be there with the listed sha256
            assert weights.resolve(entry.name, registry) == entry.package_path
    top_level = REPO_ROOT / "weights.toml"
    if top_level.exists():  # a source checkout: the top-level file is the packaged one
        assert top_level.resolve() == model_registry.PACKAGE_REGISTRY.resolve()


def test_registry_env_var_selects_the_file(registry):
    assert registry.path == Path(os.environ[model_registry.REGISTRY_ENV])
    assert sorted(registry.models) == ["hubby", "packed"]
    assert registry.default == "hubby"
    assert registry.models["packed"].package_path == registry.path.parent / "weights" / "packed.safetensors"


GOOD_HUB_ENTRY = f"""
architecture = "a"
hf_repo = "o/r"
hf_filename = "f.safetensors"
hf_revision = "{HUB_REVISION}"
sha256 = "{'0' * 64}"
size = 10
license = "MIT"
description = ""
"""


@pytest.mark.parametrize(
    "text, problem",
    [
        ("[models\n", "not valid TOML"),
        ("default = 'x'\n[models]\n", "default model 'x' is not listed"),
        ("colour = 1\n", "unknown top-level key 'colour'"),
        ("[models.m]\n" + GOOD_HUB_ENTRY.replace("0" * 64, "abc"), "'sha256' must be 64"),
        ("[models.m]\n" + GOOD_HUB_ENTRY.replace(HUB_REVISION, "main"), "full 40-hex commit sha"),
        ("[models.m]\n" + GOOD_HUB_ENTRY.replace("size = 10", "size = '10'"), "'size' must be a positive integer"),
        ("[models.m]\n" + GOOD_HUB_ENTRY + "package_file = 'weights/m.safetensors'\n", "either package_file or"),
        ("[models.m]\n" + GOOD_HUB_ENTRY.replace('hf_repo = "o/r"', ""), "missing 'hf_repo'"),
        ("[models.m]\n" + GOOD_HUB_ENTRY + "sha265 = 'x'\n", "unknown key 'sha265'"),
        ("[models.M]\n" + GOOD_HUB_ENTRY, "lowercase"),
        ("[models.m]\n" + GOOD_HUB_ENTRY.replace('hf_repo = "o/r"\nhf_filename = "f.safetensors"\n'
                                                 f'hf_revision = "{HUB_REVISION}"',
                                                 'package_file = "../m.safetensors"'), "inside the package"),
    ],
)
def test_registry_errors_name_the_file(tmp_path, text, problem):
    path = write_registry(tmp_path, text)
    with pytest.raises(WeightsError) as info:
        model_registry.load_registry(path)
    message = str(info.value)
    assert str(path) in message and problem in message and "\n" not in message


def test_missing_registry_file(tmp_path):
    with pytest.raises(WeightsError, match="cannot read model registry .*nope.toml"):
        model_registry.load_registry(tmp_path / "nope.toml")


def test_register_writes_an_entry_that_verifies(tmp_path, tiny_model, model_sha):
    folder = tmp_path / "pkg"
    registry_file = write_registry(folder, model_registry.PACKAGE_REGISTRY.read_text(encoding="utf-8"))
    link = tmp_path / "weights.toml"
    link.symlink_to(registry_file)  # like the repository's top level: written through, kept a link
    (folder / "weights").mkdir()
    target = folder / "weights" / "base.safetensors"
    shutil.copyfile(tiny_model, target)

    argv = ["register", str(target), "base", "--license", "MIT", "--description", 'trained "base" model',
            "--default", "--registry", str(link)]
    assert model_registry.main(argv) == 0
    assert link.is_symlink()
    registry = model_registry.load_registry(link)
    entry = registry.models["base"]
    assert (entry.sha256, entry.size, entry.package_file) == (model_sha, tiny_model.stat().st_size,
                                                              "weights/base.safetensors")
    assert entry.description == 'trained "base" model' and registry.default == "base"
    assert weights.resolve("base", registry) == target

    assert model_registry.main(argv) == 1  # already listed
    hub_argv = ["register", str(tiny_model), "remote", "--license", "MIT", "--description", "on the hub",
                "--registry", str(link), "--hf-repo", HUB_REPO, "--hf-revision", HUB_REVISION]
    assert model_registry.main(hub_argv) == 0
    remote = model_registry.load_registry(link).models["remote"]
    assert (remote.hf_filename, remote.hf_revision, remote.sha256) == ("random.safetensors", HUB_REVISION, model_sha)
    assert model_registry.load_registry(link).default == "base"


def test_register_refuses_a_package_file_outside_weights(tmp_path, tiny_model, capsys):
    registry_file = write_registry(tmp_path / "pkg", "[models]\n")
    code = model_registry.main(["register", str(tiny_model), "x", "--license", "MIT", "--description", "d",
                         "--registry", str(registry_file)])
    assert code == 1
    assert "must be at" in capsys.readouterr().err
    assert model_registry.load_registry(registry_file).models == {}


# --- resolve: paths and package files -----------------------------------------------------


def test_resolve_uses_an_existing_file_path(registry, tiny_model, tmp_path):
    assert weights.resolve(str(tiny_model), registry) == tiny_model
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a model")
    with pytest.raises(WeightsError, match=re.escape(str(junk))):
        weights.resolve(junk, registry)
    with pytest.raises(WeightsError, match="no such weights file"):
        weights.resolve(tmp_path / "missing.safetensors", registry)


def test_unknown_name_lists_known_names(registry):
    with pytest.raises(WeightsError, match=r"unknown model 'nope' \(known: hubby, packed"):
        weights.resolve("nope", registry)
    with pytest.raises(WeightsError, match=r"unknown model 'nope' \(known: hubby, packed\)"):
        weights.fetch("nope", registry)


def test_package_model_is_verified_and_opens(registry):
    from colorvid.models.effnet_unet import Colorizer

    path = weights.resolve("packed", registry)
    assert path == registry.models["packed"].package_path
    assert weights.fetch("packed", registry) == path  # nothing to download
    model = weights.open_model("packed", registry=registry)
    assert isinstance(model, Colorizer) and not model.training


@pytest.mark.parametrize("damage", ["sha256", "size"])
def test_package_model_with_wrong_hash_is_refused(registry, tmp_path, damage):
    entry = registry.models["packed"]
    if damage == "sha256":  # same size, one byte changed
        data = bytearray(entry.package_path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        entry.package_path.write_bytes(bytes(data))
        expected = f"expected {entry.sha256}"
    else:
        with open(entry.package_path, "ab") as handle:
            handle.write(b"\0")
        expected = f"expected {entry.size}"
    for call in (weights.resolve, weights.fetch, lambda name, reg: weights.open_model(name, registry=reg)):
        with pytest.raises(WeightsError) as info:
            call("packed", registry)
        assert "model 'packed'" in str(info.value) and expected in str(info.value)


def test_open_model_turns_a_bad_file_into_weights_error(tmp_path, registry):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\0" * 64)
    with pytest.raises(WeightsError, match=re.escape(str(junk))):
        weights.open_model(junk, registry=registry)


# --- hub models ---------------------------------------------------------------------------


def test_fetch_downloads_verifies_and_then_uses_the_cache(hub, registry, tiny_model, model_sha, tmp_path):
    from colorvid.models import load_model
    from colorvid.models.effnet_unet import Colorizer

    hub.add(tiny_model.read_bytes())
    path = weights.fetch("hubby", registry)
    cache = tmp_path / "hf" / "hub"
    assert path.is_relative_to(cache) and model_registry.sha256_file(path) == model_sha
    assert hub.count("GET") == 1
    assert isinstance(load_model(path), Colorizer)

    seen = len(hub.requests)
    assert weights.fetch("hubby", registry) == path
    assert weights.resolve("hubby", registry) == path
    assert len(hub.requests) == seen  # cached and verified: no request at all
    rows = {row.name: row for row in weights.list_models(registry)}
    assert rows["hubby"].installed and rows["hubby"].default and rows["hubby"].location == str(path)


def test_fetch_honours_cache_dir(hub, registry, tiny_model, tmp_path):
    hub.add(tiny_model.read_bytes())
    other = tmp_path / "elsewhere"
    path = weights.fetch("hubby", registry, cache_dir=other)
    assert path.is_relative_to(other)
    assert weights.resolve("hubby", registry, cache_dir=other) == path
    with pytest.raises(WeightsError, match="not downloaded"):
        weights.resolve("hubby", registry)  # not in $HF_HUB_CACHE


def test_corrupted_download_is_refused_and_removed(hub, registry, tiny_model, model_sha, tmp_path):
    data = bytearray(tiny_model.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size: only the sha256 can tell
    hub.add(bytes(data), sha256=model_sha)
    with pytest.raises(WeightsError) as info:
        weights.fetch("hubby", registry)
    message = str(info.value)
    assert f"expected {model_sha}" in message and hashlib.sha256(data).hexdigest() in message
    assert "\n" not in message
    cache = tmp_path / "hf" / "hub"
    assert cached_files(cache) == []
    assert not any(p.is_symlink() for p in cache.rglob("*"))
    with pytest.raises(WeightsError, match="not downloaded"):
        weights.resolve("hubby", registry)


def test_damaged_cache_file_is_downloaded_again(hub, registry, tiny_model, model_sha):
    hub.add(tiny_model.read_bytes())
    path = weights.fetch("hubby", registry)
    blob = path.resolve()
    blob.chmod(0o644)
    data = bytearray(blob.read_bytes())
    data[100] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="damaged.*run: colorvid fetch-weights hubby"):
        weights.resolve("hubby", registry)
    assert weights.fetch("hubby", registry) == path
    assert hub.count("GET") == 2 and model_registry.sha256_file(path) == model_sha


def test_hub_size_mismatch_is_refused_before_downloading(hub, registry, tiny_model):
    hub.add(tiny_model.read_bytes() + b"\0")
    with pytest.raises(WeightsError, match="bytes, expected"):
        weights.fetch("hubby", registry)
    assert hub.count("GET") == 0


def test_missing_hub_file(hub, registry):
    with pytest.raises(WeightsError, match=f"{HUB_FILE} not found in {HUB_REPO}"):
        weights.fetch("hubby", registry)


def test_unreachable_hub_is_one_line(hub, registry, monkeypatch):
    endpoint = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    start = time.monotonic()
    with pytest.raises(WeightsError) as info:
        weights.fetch("hubby", registry)
    message = str(info.value)
    assert "model 'hubby'" in message and endpoint in message and "\n" not in message
    assert time.monotonic() - start < 10  # no minute of retries


def test_offline_and_not_cached(hub, registry, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsError) as info:
        weights.fetch("hubby", registry)
    assert "HF_HUB_OFFLINE" in str(info.value) and "colorvid fetch-weights hubby" in str(info.value)
    with pytest.raises(WeightsError, match="not downloaded; run: colorvid fetch-weights hubby"):
        weights.resolve("hubby", registry)
    assert hub.requests == []


def test_offline_uses_the_cache(hub, registry, tiny_model, monkeypatch):
    hub.add(tiny_model.read_bytes())
    path = weights.fetch("hubby", registry)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    seen = len(hub.requests)
    assert weights.fetch("hubby", registry) == path
    assert weights.resolve("hubby", registry) == path
    assert len(hub.requests) == seen


def test_resolve_never_downloads(hub, registry, tiny_model):
    hub.add(tiny_model.read_bytes())
    with pytest.raises(WeightsError) as info:
        weights.resolve("hubby", registry)
    assert str(info.value) == "model 'hubby' is not downloaded; run: colorvid fetch-weights hubby"
    with pytest.raises(WeightsError, match="not downloaded"):
        weights.open_model(registry=registry)  # the default model
    assert hub.requests == []
    row = {r.name: r for r in weights.list_models(registry)}["hubby"]
    assert not row.installed and row.location == f"hf://{HUB_REPO}@{HUB_REVISION}/{HUB_FILE}"


# --- command line ----------------------------------------------------------------------------


def test_cli_weights_lists_models(hub, registry, run):
    status, err = run(["weights"])
    assert status == 0, err
    lines = run.out.splitlines()
    assert lines[0].split() == ["NAME", "FAMILY", "SIZE", "SPEED", "LICENSE", "CACHED", "DEFAULT", "DESCRIPTION"]
    size_mb = f"{registry.models['hubby'].size / 1e6:.1f}"
    family = "effnet-lite0-unet"
    assert lines[1].split() == ["hubby", family, size_mb, "MB", "?", "MIT", "no", "*", "random", "weights", "on",
                                "the", "hub"]
    assert lines[2].split()[:7] == ["packed", family, size_mb, "MB", "?", "Apache-2.0", "yes"]


def test_cli_fetch_weights(hub, registry, tiny_model, run):
    hub.add(tiny_model.read_bytes())
    status, err = run(["fetch-weights", "hubby"])
    assert status == 0, err
    path = Path(run.out.strip())
    assert path.is_file() and model_registry.sha256_file(path) == registry.models["hubby"].sha256
    run(["weights"])
    assert run.out.splitlines()[1].split()[6] == "yes"

    status, err = run(["fetch-weights"])  # the default model, now cached
    assert (status, run.out.strip()) == (0, str(path)), err

    status, err = run(["fetch-weights", "nope", "packed"])
    assert status == 1
    assert run.out.strip() == str(registry.models["packed"].package_path)
    assert err.strip() == "colorvid: error: unknown model 'nope' (known: hubby, packed)"
