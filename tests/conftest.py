"""Fixtures shared by the test modules: small model files, the in-process CLI runner,
a fake Hugging Face Hub, and the ``gpu`` marker's skip. Helper functions are in media.py
(and fake_hub.py for the hub)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

from colorvid import cli
from colorvid.models.effnet_unet import Colorizer, ModelConfig, save_model

sys.path.insert(0, os.path.dirname(__file__))  # `from media import ...` in any test module
from fake_hub import FakeHub  # noqa: E402
from media import KEY_AB, TINT_AB  # noqa: E402


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


# --- model files -----------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A random-initialised colorizer file (fp16, about 6 MB): its colors change with the picture."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "random.safetensors"
    save_model(Colorizer(ModelConfig()), path)
    return path


def flat_colorizer(path: Path, ab: tuple[float, float]) -> Path:
    """Write a colorizer file whose regression head outputs ``ab`` everywhere, so colors are predictable."""
    torch.manual_seed(0)
    model = Colorizer(ModelConfig())
    assert model.regress.bias is not None  # Conv2d has one by default
    with torch.no_grad():
        model.regress.weight.zero_()
        model.regress.bias.copy_(torch.tensor(ab) / 110.0)
    save_model(model, path)
    return path


@pytest.fixture(scope="session")
def tinted_model(tmp_path_factory) -> Path:
    """A colorizer whose colors are TINT_AB everywhere."""
    return flat_colorizer(tmp_path_factory.mktemp("model") / "tinted.safetensors", TINT_AB)


@pytest.fixture(scope="session")
def key_model(tmp_path_factory) -> Path:
    """A second colorizer whose colors are KEY_AB everywhere: a --keyframes-model."""
    return flat_colorizer(tmp_path_factory.mktemp("key-model") / "key.safetensors", KEY_AB)


# --- the command line ------------------------------------------------------------


class CliRunner:
    """Runs ``colorvid ARGS`` in-process as the console script does."""

    def __init__(self, capsys, monkeypatch):
        self._capsys = capsys
        self._monkeypatch = monkeypatch
        self.out = ""  # what the last run printed to stdout

    def __call__(self, args) -> tuple[int, str]:
        """(exit status, what went to stderr); ``args`` may hold paths and numbers."""
        self._monkeypatch.setattr(sys, "argv", ["colorvid", *map(str, args)])
        with pytest.raises(SystemExit) as exit_info:
            cli.main()
        captured = self._capsys.readouterr()
        self.out = captured.out
        code = exit_info.value.code
        assert isinstance(code, int), f"colorvid exited with {code!r}, not a status number"
        return code, captured.err


@pytest.fixture
def run(capsys, monkeypatch) -> CliRunner:
    """``status, err = run(["colorize", ...])``; ``run.out`` is the run's stdout."""
    monkeypatch.delenv("COLORVID_DEBUG", raising=False)  # errors as users see them, not tracebacks
    return CliRunner(capsys, monkeypatch)


# --- a fake Hugging Face Hub -----------------------------------------------------


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """A FakeHub as HF_ENDPOINT, with an empty huggingface_hub cache in tmp_path / "hf" / "hub"."""
    from huggingface_hub import constants

    fake = FakeHub()
    monkeypatch.setenv("HF_ENDPOINT", fake.url)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # read at import: keep the tests hermetic
    yield fake
    fake.close()
