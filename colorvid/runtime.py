"""A colorizer ready to run: the loaded network, its device and precision, and the settings
resolved for it (temporal mode and strength, render size).

``colorize``, ``evaluate`` and ``preview`` each load one :class:`LoadedModel`
and make a :class:`~colorvid.colorizer.FrameColorizer` from it for every video.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from colorvid.colorizer import FrameColorizer
from colorvid.errors import ColorizeError
from colorvid.models import Network
from colorvid.smoothing import temporal_settings
from colorvid.weights import ModelFile

log = logging.getLogger("colorvid")


def select_device(name: str = "auto") -> torch.device:
    """'auto' picks CUDA, then Apple MPS, then the CPU.

    Raises:
        ValueError: the device named is not available.
    """
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device {name!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"device {name!r} requested but Apple MPS is not available")
    return device


@dataclass
class LoadedModel:
    """The network on its device, with the settings every frame is colorized with."""

    model: Network
    device: torch.device
    half: bool
    name: str | None  # as the user gave it (a registry name or a file); None: the registry's default
    render_size: int  # as the model applies it (its family's meaning)
    temporal: str  # "none", "blend", "flow" or "model", settled for this model
    smooth: float
    file: ModelFile
    key_model: Network | None = None  # colors each shot's first frame as a keyframe (--keyframes-model)
    key_file: ModelFile | None = None

    @classmethod
    def load(
        cls,
        name: str | None = None,
        device: str = "auto",
        half: bool | None = None,
        render_size: int | None = None,
        temporal: str | None = None,
        smooth: float | None = None,
        keyframes_model: str | None = None,
    ) -> LoadedModel:
        """Resolve and load a model (see :func:`colorvid.weights.locate`).

        ``half`` None means half precision on CUDA only (bf16 for DDColor); ``render_size``
        None, the model's default (its registry entry's, else its family's); ``temporal``
        and ``smooth`` None, the model's defaults (:func:`colorvid.smoothing.temporal_settings`).
        ``keyframes_model`` is another model (at its own default render size) that colors the
        first frame of each shot, whose colors are then carried through the shot.

        Raises:
            ColorizeError: the device is not available, the render size does not fit the
                model's family, or the temporal settings do not fit the model.
            WeightsError: the model cannot be found, verified or loaded.
        """
        from colorvid.weights import locate

        try:
            torch_device = select_device(device)
        except ValueError as exc:
            raise ColorizeError(str(exc)) from None
        half = half if half is not None else torch_device.type == "cuda"
        file = locate(name)
        try:
            model = file.load(torch_device, half, optimize=True, render_size=render_size)
        except ValueError as exc:
            raise ColorizeError(f"--render-size: {exc}") from None
        has_head = getattr(model, "temporal", None) is not None
        try:
            temporal, smooth = temporal_settings(temporal, smooth, has_head)
        except ValueError as exc:
            raise ColorizeError(f"{name or 'the default model'}: {exc}") from None
        key_file = key_model = None
        if keyframes_model is not None:
            key_file = locate(keyframes_model)
            key_model = key_file.load(torch_device, half, optimize=True)
        return cls(model, torch_device, half, name, model.render_size, temporal, smooth, file, key_model, key_file)

    def fitted(self, keyframes: Sequence[torch.Tensor]) -> LoadedModel:
        """This model with its read-out fitted to ``keyframes`` (RGB (3, H, W), floats in 0..1 or
        uint8; see :func:`colorvid.models.effnet_unet.fit_readout`): loaded again, fitted, and
        made ready to run as this one is. Frames of shots without a keyframe then take the film's
        palette as the keyframes show it.

        Raises:
            ColorizeError: the model is not one of colorvid's own regression models.
        """
        from colorvid.models import effnet_unet

        network = self.file.load(self.device, half=False, optimize=False, render_size=self.render_size)
        label = self.name or "the default model"
        if not isinstance(network, effnet_unet.Colorizer):
            raise ColorizeError(f"--keyframes-fit: {label} is not a colorvid model; only those have a read-out "
                                "that can be fitted")
        try:
            gain = effnet_unet.fit_readout(network, keyframes)
        except ValueError as exc:
            raise ColorizeError(f"--keyframes-fit: {label}: {exc}") from None
        log.info("read-out fitted to %d keyframe%s (gain %.2f)", len(keyframes), "" if len(keyframes) == 1 else "s",
                 gain)
        return replace(self, model=effnet_unet.for_inference(network, self.half, optimize=True))

    @property
    def sha256(self) -> str:
        """The weights file's sha256: what identifies the model in a resumable run's settings."""
        return self.file.sha256

    def frame_colorizer(
        self,
        matrix: str,
        full_range: bool,
        *,
        smoothing: bool = True,
        source_matrix: str | None = None,
        source_full_range: bool | None = None,
        key_every: float | None = None,
    ) -> FrameColorizer:
        """A colorizer for one video's frames, written in ``matrix``/``full_range`` Y'CbCr
        (see :class:`FrameColorizer`); ``smoothing`` False colorizes each frame on its own;
        ``key_every`` (seconds) adds the key model's keyframes in long shots."""
        return FrameColorizer(
            self.model, self.device, matrix, full_range, self.smooth if smoothing else 0.0,
            temporal=self.temporal if smoothing else None,
            source_matrix=source_matrix, source_full_range=source_full_range, key_model=self.key_model,
            key_every=key_every,
        )
