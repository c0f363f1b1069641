"""DDColor (Kang et al., ICCV 2023): the published colorizers, built by spandrel from their state dicts.

DDColor is a ConvNeXt encoder (tiny: ConvNeXt-T; large: ConvNeXt-L, shared by the
paper, modelscope and artistic files), a pixel-shuffle U-Net decoder and a color
decoder of 100 learned queries attending to three decoder scales over 9
transformer layers. It sees a gray RGB image stretched to a square (512 x 512
in the original inference) and predicts Lab ab at that size.

The network is spandrel-extra-arches' copy of the original code (the ``DDColor``
architecture of spandrel, the loader ComfyUI and chaiNNer use). Only its
network is used: spandrel's own call API runs DDColor at 256 x 256, resizes in
linear light and returns RGB, so :class:`DDColorColorizer` does the original's
pre- and post-processing itself.

The published files (``ddcolor_paper_tiny.pth``, ``ddcolor_paper.pth``,
``ddcolor_modelscope.pth``, ``ddcolor_artistic.pth``) are pickles of
``{"params": state_dict}`` in fp32; they are read with ``weights_only=True``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from colorvid.color import lab_to_rgb
from colorvid.errors import ModelFileError
from colorvid.models import SquareInputColorizer
from colorvid.models.torch_files import read_state_dict

DEFAULT_INPUT_SIZE = 512  # the side of the square the original inference stretches every image to
INPUT_MULTIPLE = 32  # the encoder's stride: the input side must be a multiple of it

VARIANTS = ("ddcolor-tiny", "ddcolor-large")
# ConvNeXt (depths, dims) of each variant's encoder.
_ENCODERS = {
    "ddcolor-tiny": ((3, 3, 9, 3), (96, 192, 384, 768)),
    "ddcolor-large": ((3, 3, 27, 3), (192, 384, 768, 1536)),
}
# Keys every DDColor state dict has (the ones spandrel detects the architecture by).
_DETECT_KEYS = (
    "mean",
    "std",
    "refine_net.0.0.weight_orig",
    "refine_net.0.0.weight_u",
    "refine_net.0.0.weight_v",
    "encoder.arch.downsample_layers.0.0.weight",
    "encoder.arch.downsample_layers.3.1.weight",
    "encoder.arch.stages.3.0.gamma",
    "encoder.arch.stages.3.0.dwconv.weight",
    "encoder.arch.stages.3.0.pwconv1.weight",
    "encoder.arch.stages.3.0.pwconv2.weight",
    "encoder.arch.norm.weight",
    "decoder.color_decoder.query_feat.weight",
)
# Wrappers a state dict comes in: the original's training saves {"params": ...} (and
# {"params_ema": ...} beside it when it keeps an average); its inference reads "params".


def read_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state dict in a DDColor weights file (no pickled code is run).

    Raises:
        ModelFileError: the file cannot be read safely or holds no state dict.
    """
    return read_state_dict(path)


def _seq_len(state: Mapping[str, torch.Tensor], prefix: str) -> int:
    """How many numbered children ``prefix.0``, ``prefix.1``, ... the state dict has."""
    n = 0
    while any(key.startswith(f"{prefix}.{n}.") for key in state):
        n += 1
    return n


def _variant(state: Mapping[str, torch.Tensor]) -> str:
    missing = [key for key in _DETECT_KEYS if key not in state]
    if missing:
        raise ModelFileError(f"not a DDColor state dict (no {missing[0]!r})")
    depths = tuple(_seq_len(state, f"encoder.arch.stages.{i}") for i in range(4))
    try:
        dims = tuple(int(state[f"encoder.arch.stages.{i}.0.norm.weight"].shape[0]) for i in range(4))
    except (KeyError, IndexError):
        raise ModelFileError("not a DDColor state dict (its encoder stages are incomplete)") from None
    variant = next((name for name, encoder in _ENCODERS.items() if encoder == (depths, dims)), None)
    if variant is None:
        raise ModelFileError(f"a DDColor encoder this version does not load (ConvNeXt depths {depths}, dims {dims})")
    out_channels = state["refine_net.0.0.weight_orig"].shape[0]
    if out_channels != 2:
        raise ModelFileError(f"a DDColor that predicts {out_channels} channels, not Lab ab")
    return variant


def matches(state: Mapping[str, torch.Tensor]) -> str | None:
    """"ddcolor-tiny" or "ddcolor-large" when the state dict is a DDColor's that this module loads, else None."""
    try:
        return _variant(state)
    except ModelFileError:
        return None


def check(path: str | os.PathLike) -> None:
    """Raise ModelFileError unless ``path`` is a DDColor weights file of a variant this version loads."""
    _variant(read_state(path))


class _SkipInit(TorchFunctionMode):
    """Skips the random initialization of a network whose every parameter a strict load then overwrites.

    Constructing DDColor-L fills 228M parameters with random values, half of a
    load's time on a CPU (most of the rest is the trial run of the encoder by
    which spandrel's constructor learns its feature sizes). Inside this mode,
    random fills, ``torch.nn.init`` functions and in-place arithmetic on
    parameters do nothing; ``copy_`` (what ``load_state_dict`` writes with) and
    everything else run as usual.
    """

    _RANDOM_FILLS = frozenset({"uniform_", "normal_", "erfinv_"})
    _PARAMETER_WRITES = frozenset({"mul_", "add_", "sub_", "div_", "clamp_", "fill_", "zero_"})

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        target = args[0] if args else kwargs.get("tensor")  # torch.nn.init passes it by name
        if isinstance(target, torch.Tensor) and (
            name in self._RANDOM_FILLS
            or getattr(func, "__module__", None) == "torch.nn.init"
            or (name in self._PARAMETER_WRITES and isinstance(target, nn.Parameter))
        ):
            return target
        return func(*args, **kwargs)


def _load_error(exc: BaseException, variant: str) -> ModelFileError:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    details = "; ".join(lines[1:] if len(lines) > 1 else lines)  # torch's lines name the missing/unexpected keys
    if len(details) > 400:
        details = details[:400] + " ..."
    return ModelFileError(f"weights do not fit the {variant} architecture: {details}")


def _to_input_dtype(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
    return output.to(inputs[0].dtype)


def _build(state: Mapping[str, torch.Tensor], variant: str) -> nn.Module:
    """The DDColor network of ``state``, built and strictly loaded by spandrel."""
    from spandrel_extra_arches.architectures.DDColor import DDColorArch

    # spandrel drops the encoder's unused classifier (encoder.arch.head_cls.*, which
    # modelscope's copy of the code keeps) and then loads strictly: any other key
    # the network lacks, or tensor it lacks a key for, fails the load.
    try:
        with _SkipInit():
            descriptor = DDColorArch().load(dict(state))
    except RuntimeError as exc:
        raise _load_error(exc, variant) from None
    except (KeyError, IndexError, ValueError) as exc:
        raise ModelFileError(f"weights do not fit the {variant} architecture ({exc!r})") from None
    net = descriptor.model
    unloaded = set(dict(net.named_buffers())) - set(net.state_dict())
    if unloaded:  # _SkipInit relies on the strict load writing every tensor the network keeps
        raise RuntimeError(f"DDColor has buffers no weights file sets: {sorted(unloaded)}")
    # The sine position encoding is computed in fp32 whatever the network's dtype;
    # its output follows the features' dtype so that the network also runs in bf16.
    net.get_submodule("decoder.color_decoder.pe_layer").register_forward_hook(_to_input_dtype)
    return net


def _fold_spectral_norm(net: nn.Module) -> None:
    """Replace each spectrally normalized weight by its value (what every eval forward recomputes)."""
    from torch.nn.utils import remove_spectral_norm
    from torch.nn.utils.spectral_norm import SpectralNorm

    for module in net.modules():
        if any(isinstance(hook, SpectralNorm) for hook in module._forward_pre_hooks.values()):
            remove_spectral_norm(module)


def load(
    path: str | os.PathLike,
    device: torch.device | str = "cpu",
    half: bool = False,
    fuse: bool = True,
    optimize: bool = False,
    render_size: int | None = None,
) -> DDColorColorizer:
    """Load a DDColor weights file for inference (see :func:`from_state`).

    Raises:
        ModelFileError: the file is not a DDColor model this version loads.
        ValueError: ``render_size`` is not a positive multiple of 32.
    """
    _input_size(render_size)  # before reading a big file
    return from_state(read_state(path), device, half, fuse, optimize, render_size)


def _input_size(render_size: int | None) -> int:
    input_size = DEFAULT_INPUT_SIZE if render_size is None else int(render_size)
    if input_size <= 0 or input_size % INPUT_MULTIPLE:
        raise ValueError(f"DDColor's input size must be a positive multiple of {INPUT_MULTIPLE}, not {render_size}")
    return input_size


def from_state(
    state: Mapping[str, torch.Tensor],
    device: torch.device | str = "cpu",
    half: bool = False,
    fuse: bool = True,
    optimize: bool = False,
    render_size: int | None = None,
) -> DDColorColorizer:
    """A DDColor state dict made ready for inference: eval mode, on ``device``, as a :class:`DDColorColorizer`.

    ``half`` runs the network in bfloat16 (DDColor is unreliable in fp16); ``fuse``
    folds the spectral normalization into plain weights (computed in fp32 before
    any cast); ``optimize`` has no effect for this family. ``render_size`` is the
    side of the square the network sees (default :data:`DEFAULT_INPUT_SIZE`).

    Raises:
        ModelFileError: the state dict is not a DDColor model this version loads.
        ValueError: ``render_size`` is not a positive multiple of 32.
    """
    del optimize
    input_size = _input_size(render_size)
    variant = _variant(state)
    net = _build(state, variant)
    del state
    net.eval()
    if fuse:
        _fold_spectral_norm(net)
    # spandrel marks DDColor as bf16-capable and fp16-incapable (its descriptor's .half()
    # raises) but casts nothing itself, and cast as it is the network fails in bf16 (its
    # position encoding stays fp32): _build makes that encoding follow the features' dtype.
    net = net.to(device=device, dtype=torch.bfloat16 if half else None)
    model = DDColorColorizer(net, variant, input_size)
    model.eval()
    return model


class DDColorColorizer(SquareInputColorizer):
    """Lab L (B, 1, h, w) in 0..100 -> Lab ab (B, 2, h, w), as the original DDColor inference does it.

    The original turns the image into a gray RGB one (its Lab L with a = b = 0,
    back to RGB), stretches it to ``input_size`` x ``input_size`` (cv2.resize,
    bilinear), runs the network and resizes its ab to the image size. Here the
    gray RGB comes from L directly (for a gray image the original's L round trip
    changes nothing) and the stretch is ``F.interpolate(mode="bilinear",
    align_corners=False)``, what cv2's INTER_LINEAR computes (half-pixel centers,
    no antialiasing). The original brings ab back with ``F.interpolate``'s default
    "nearest"; ``ab_resize`` is "bilinear" here, which does not repeat ab in
    blocks when the frame is larger than the square ("nearest" reproduces the
    original exactly). colorvid's pipeline never resizes here: it gives the
    network the square (:meth:`inference_size`) and brings ab to the frame's size
    with the guided filter on luma that every family's colors go through, which
    follows the frame's edges where either resize would blur or block them.
    """

    def __init__(self, net: nn.Module, variant: str, input_size: int = DEFAULT_INPUT_SIZE, ab_resize: str = "bilinear"):
        super().__init__()
        self.net = net
        self.variant = variant
        self.input_size = input_size
        self.ab_resize = ab_resize
        # where the encoder leaves its features for the decoder (forward hooks)
        self._hooks = list(getattr(net.get_submodule("encoder"), "hooks"))

    @property
    def render_size(self) -> int:
        return self.input_size

    @property
    def square_size(self) -> int:
        """The square the original stretches every image to."""
        return self.input_size

    def forward(self, lightness: torch.Tensor) -> torch.Tensor:
        if lightness.dim() != 4 or lightness.shape[1] != 1:
            raise ValueError(f"expected Lab L of shape (B, 1, H, W), got {tuple(lightness.shape)}")
        h, w = lightness.shape[-2:]
        light = lightness.float()
        zeros = torch.zeros_like(light)
        gray = lab_to_rgb(torch.cat((light, zeros, zeros), dim=1))
        size = (self.input_size, self.input_size)
        if (h, w) != size:
            gray = F.interpolate(gray, size=size, mode="bilinear", align_corners=False)
        dtype = next(self.net.parameters()).dtype
        try:
            ab = self.net(gray.to(dtype).contiguous()).float()
        finally:
            for hook in self._hooks:  # drop the features the decoder has used
                hook.feature = None
        if (h, w) != tuple(ab.shape[-2:]):
            if self.ab_resize == "nearest":
                ab = F.interpolate(ab, size=(h, w), mode="nearest")
            else:
                ab = F.interpolate(ab, size=(h, w), mode=self.ab_resize, align_corners=False)
        return ab
