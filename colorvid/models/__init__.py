"""Colorizer networks, one module per architecture family, and the one way to load them.

A family module defines its network, reads its weights files and builds a
ready-to-run model; :func:`load_model` picks the family from the file:

- ``effnet-lite0-unet`` (:mod:`colorvid.models.effnet_unet`): colorvid's own
  models, safetensors files whose metadata names the architecture;
- ``ddcolor`` (:mod:`colorvid.models.ddcolor`) and ``deoldify``
  (:mod:`colorvid.models.deoldify`): the published PyTorch pickles
  (``.pth``/``.bin``), recognized by the keys of their state dicts.

A family is a module with ``load(path, device, half, fuse, optimize, render_size)``
and ``check(path)``; a pickled family also has ``matches(state)`` (its variant
or None) and ``from_state(state, ...)``, so that a file is read only once.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping
from typing import Protocol

import torch

from colorvid.errors import ModelFileError

# Architecture name (as weights.toml and the weights files give it) -> module of that family.
FAMILIES = {
    "effnet-lite0-unet": "colorvid.models.effnet_unet",
    "ddcolor": "colorvid.models.ddcolor",
    "deoldify": "colorvid.models.deoldify",
}
SAFETENSORS_FAMILY = "effnet-lite0-unet"
PICKLED_FAMILIES = ("ddcolor", "deoldify")  # recognized from a state dict's keys, in this order

# What --render-size means for each family (for help texts and messages).
RENDER_SIZE_MEANING = {
    "effnet-lite0-unet": "short side in pixels of the frames the network sees (default 256)",
    "ddcolor": "side of the square the frames are stretched to (default 512, a multiple of 32)",
    "deoldify": "render factor: the frames are stretched to a square of 16x it pixels (default 35; video: 21)",
}


class Network(Protocol):
    """What colorizing asks of a model that a family's ``load`` returns (a torch module)."""

    render_size: int  # the family's --render-size in effect (see RENDER_SIZE_MEANING)

    @property
    def temporal(self) -> Callable[..., torch.Tensor] | None:
        """The previous-frame head, if the model has one."""
        ...

    @property
    def input_dtype(self) -> torch.dtype:
        """The dtype to give the network its lightness in."""
        ...

    def inference_size(self, height: int, width: int) -> tuple[int, int]:
        """The (height, width) of the lightness the network takes for a frame of that size."""
        ...

    def __call__(self, lightness: torch.Tensor) -> torch.Tensor:
        """L (B, 1, H, W) -> ab (B, 2, h, w) in Lab units."""
        ...

    def trunk(self, lightness: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """L -> (decoder features, ab): what the previous-frame head needs."""
        ...


class SquareInputColorizer(torch.nn.Module):
    """What the published families share: a gray picture stretched to a square of ``square_size``
    pixels, lightness given in fp32 (they make their RGB input from it themselves), no
    previous-frame head (colorvid smooths their colors with the flow)."""

    temporal = None

    @property
    def square_size(self) -> int:
        raise NotImplementedError

    @property
    def input_dtype(self) -> torch.dtype:
        return torch.float32

    def inference_size(self, height: int, width: int) -> tuple[int, int]:
        """The square the network sees: its colors come back at that size."""
        return self.square_size, self.square_size

    def trunk(self, lightness: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise TypeError(f"{type(self).__name__} has no previous-frame head")


def _family(name: str):
    return importlib.import_module(FAMILIES[name])


def is_safetensors(path: str | os.PathLike) -> bool:
    """Whether the file starts like a safetensors file: an 8-byte header length, then a JSON object."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(9)
    except OSError as exc:
        raise ModelFileError(f"cannot read ({exc.strerror or exc})") from None
    if len(head) < 9 or head[8:9] != b"{":
        return False
    return int.from_bytes(head[:8], "little") < os.path.getsize(path)


def _safetensors_family(path: str | os.PathLike) -> str:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(os.fspath(path), framework="pt") as handle:
            architecture = (handle.metadata() or {}).get("architecture")
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(f"not a safetensors model file ({exc})") from None
    if architecture != SAFETENSORS_FAMILY:
        known = ", ".join(map(repr, FAMILIES))
        raise ModelFileError(f"unknown architecture {architecture!r} (this colorvid loads {known})")
    return architecture


def pickled_family(state: Mapping[str, torch.Tensor]) -> str:
    """The family whose keys a state dict has.

    Raises:
        ModelFileError: no family this colorvid loads.
    """
    for name in PICKLED_FAMILIES:
        if _family(name).matches(state) is not None:
            return name
    raise ModelFileError("a PyTorch state dict of no family this colorvid loads (DDColor or DeOldify)")


def family_of(path: str | os.PathLike) -> str:
    """The architecture a weights file holds (a pickle is read whole to see its keys).

    Raises:
        ModelFileError: the file is not a model file of a known family.
    """
    if is_safetensors(path):
        return _safetensors_family(path)
    from colorvid.models.torch_files import read_state_dict

    return pickled_family(read_state_dict(path))


def load_model(
    path: str | os.PathLike,
    device: torch.device | str = "cpu",
    half: bool = False,
    *,
    fuse: bool = True,
    optimize: bool = False,
    render_size: int | None = None,
) -> Network:
    """Load a weights file of any family for inference: eval mode, on ``device``.

    ``half`` runs in the family's half precision (fp16, or bf16 for DDColor);
    ``fuse`` folds normalizations into convolutions; ``optimize`` lets the family
    compile a faster CPU form with the same outputs; ``render_size`` None is the
    family's default (see RENDER_SIZE_MEANING).

    Raises:
        ModelFileError: the file is not a model this colorvid can load.
        ValueError: ``render_size`` does not fit the family.
    """
    options = dict(device=device, half=half, fuse=fuse, optimize=optimize, render_size=render_size)
    if is_safetensors(path):
        return _family(_safetensors_family(path)).load(path, **options)
    from colorvid.models.torch_files import read_state_dict

    state = read_state_dict(path)
    return _family(pickled_family(state)).from_state(state, **options)


def check_model_file(path: str | os.PathLike) -> str:
    """Read a weights file as its family would, without building the network; its architecture.

    Raises:
        ModelFileError: the file is not a model this colorvid can load.
    """
    if is_safetensors(path):
        architecture = _safetensors_family(path)
        _family(architecture).check(path)
        return architecture
    return family_of(path)
