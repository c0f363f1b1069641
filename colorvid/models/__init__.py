"""Colorizer networks, one module per architecture family, and the one way to load them.

A family module defines its network, reads its weights files and builds a
ready-to-run model; :func:`load_model` picks the family from the file.
Today there is one family, colorvid's own ``effnet-lite0-unet``
(:mod:`colorvid.models.effnet_unet`). A new family is a module with a
``load(path, device, half, fuse, optimize)`` function and a ``check(path)``
function, listed in ``FAMILIES``.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import Protocol

import torch

from colorvid.errors import ModelFileError

# Architecture name (as weights.toml and the weights files give it) -> module of that family.
FAMILIES = {"effnet-lite0-unet": "colorvid.models.effnet_unet"}


class Network(Protocol):
    """What colorizing asks of a model that a family's ``load`` returns (a torch module)."""

    @property
    def temporal(self) -> Callable[..., torch.Tensor] | None:
        """The previous-frame head, if the model has one."""
        ...

    def __call__(self, lightness: torch.Tensor) -> torch.Tensor:
        """L (B, 1, H, W) -> ab (B, 2, h, w) in Lab units."""
        ...

    def trunk(self, lightness: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """L -> (decoder features, ab): what the previous-frame head needs."""
        ...


def family_of(path: str | os.PathLike) -> str:
    """The architecture a weights file holds.

    Raises:
        ModelFileError: the file is not a model file of a known family.
    """
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(os.fspath(path), framework="pt") as handle:
            architecture = (handle.metadata() or {}).get("architecture")
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(f"not a safetensors model file ({exc})") from None
    if architecture not in FAMILIES:
        expected = ", ".join(map(repr, FAMILIES))
        raise ModelFileError(f"unknown architecture {architecture!r} (expected one of {expected})")
    return architecture


def load_model(
    path: str | os.PathLike,
    device: torch.device | str = "cpu",
    half: bool = False,
    *,
    fuse: bool = True,
    optimize: bool = False,
) -> Network:
    """Load a weights file of any family for inference: eval mode, on ``device``.

    ``half`` runs in fp16; ``fuse`` folds batch norms into convolutions; ``optimize``
    lets the family compile a faster CPU form with the same outputs.

    Raises:
        ModelFileError: the file is not a model this colorvid can load.
    """
    family = importlib.import_module(FAMILIES[family_of(path)])
    return family.load(path, device=device, half=half, fuse=fuse, optimize=optimize)


def check_model_file(path: str | os.PathLike) -> str:
    """Read a weights file as its family would, without building the network; its architecture.

    Raises:
        ModelFileError: the file is not a model this colorvid can load.
    """
    architecture = family_of(path)
    importlib.import_module(FAMILIES[architecture]).check(path)
    return architecture
