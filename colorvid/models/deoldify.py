"""DeOldify's generator as a colorvid model family: the published ``Colorize*_gen.pth`` files.

A port of the generator of DeOldify (https://github.com/jantic/DeOldify, MIT
License, Copyright (c) 2018 Jason Antic), which builds it with fastai v1's
dynamic U-Net, self-attention and pixel-shuffle layers (Apache License 2.0).
What differs from the original:

- the network is written anew in plain PyTorch: the ResNet body returns its
  skip features instead of fastai's forward hooks, and neither fastai nor
  torchvision is needed; the modules sit at the original's state-dict paths,
  so a file's keys name the same tensors here;
- inference only: the spectral and weight norms of the file are folded into
  plain weights when the file is read, and with ``fuse`` every batch norm that
  directly follows a convolution is folded into it;
- the self-attention is computed with ``scaled_dot_product_attention`` (scale 1,
  as the original's plain softmax of dot products), in fp32 even in half mode;
- the pre- and post-processing work on tensors of Lab lightness instead of PIL
  images, in float throughout (the original rounds to 8 bits before and after
  the network), and return Lab ab (see :class:`DeOldifyColorizer`).

Variants (layouts): ``deoldify-artistic`` is ``ColorizeArtistic_gen.pth``
(ResNet-34 body, "deep" U-Net, nf_factor 1.5); ``deoldify-stable`` is
``ColorizeStable_gen.pth`` and ``ColorizeVideo_gen.pth`` (ResNet-101 body,
"wide" U-Net, nf_factor 2), which share one layout.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from colorvid.color import lab_to_rgb, rgb_to_lab
from colorvid.errors import ModelFileError
from colorvid.models import SquareInputColorizer
from colorvid.models.torch_files import read_state_dict

ARTISTIC = "deoldify-artistic"
STABLE = "deoldify-stable"
VIDEO = "deoldify-video"  # the stable layout with the video weights and their lower default render factor

# The originals' default render factors (visualize.py): the square the network sees is 16 * factor pixels.
DEFAULT_RENDER_FACTOR = {ARTISTIC: 35, STABLE: 35, VIDEO: 21}
RENDER_BASE = 16

# fastai's imagenet_stats, which DeOldify normalizes its input and output with.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# PIL's convert("L") weights (ITU-R 601-2 luma), the original's gray conversion.
_GRAY_WEIGHTS = (0.299, 0.587, 0.114)
Y_RANGE = (-3.0, 3.0)  # the generator's sigmoid range, in normalized RGB units
HALF_DTYPE = torch.float16  # what ``half`` means for this family (fine on CUDA)

# A fastai wrapper pickle holds the state dict under one of these keys; a bare state dict is also accepted.


@dataclass(frozen=True)
class Variant:
    blocks: tuple[int, int, int, int]  # residual blocks per ResNet stage
    bottleneck: bool  # ResNet-50/101 bottleneck blocks (else ResNet-18/34 basic blocks)
    unet: str  # "deep" (DynamicUnetDeep) or "wide" (DynamicUnetWide)
    nf_factor: float


VARIANTS = {
    ARTISTIC: Variant(blocks=(3, 4, 6, 3), bottleneck=False, unet="deep", nf_factor=1.5),
    STABLE: Variant(blocks=(3, 4, 23, 3), bottleneck=True, unet="wide", nf_factor=2),
}
LAYOUT_OF = {ARTISTIC: ARTISTIC, STABLE: STABLE, VIDEO: STABLE}  # variant name -> layout it is stored in


def render_pixels(render_factor: int) -> int:
    """The side of the square the network renders at, in pixels, for a render factor."""
    return int(render_factor) * RENDER_BASE


# --- convolutions whose weight the file stores normalized ---------------------------------------------


class SpectralNormed:
    """Marks a convolution whose file entry is spectral-normed (``weight_orig``, ``weight_u``, ``weight_v``)."""


class WeightNormed:
    """Marks a convolution whose file entry is weight-normed (``weight_g``, ``weight_v``)."""


class _SpectralConv2d(SpectralNormed, nn.Conv2d):
    pass


class _SpectralConv1d(SpectralNormed, nn.Conv1d):
    pass


class _WeightNormConv2d(WeightNormed, nn.Conv2d):
    pass


# --- the ResNet body ----------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    """torchvision's ResNet-18/34 block (same parameter names)."""

    expansion = 1

    def __init__(self, cin: int, width: int, stride: int):
        super().__init__()
        cout = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.downsample = _projection(cin, cout, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))

    def fuse(self) -> None:
        self.conv1, self.bn1 = _fold_bn(self.conv1, self.bn1), nn.Identity()
        self.conv2, self.bn2 = _fold_bn(self.conv2, self.bn2), nn.Identity()
        if self.downsample is not None:
            self.downsample = nn.Sequential(_fold_bn(self.downsample[0], self.downsample[1]))


class Bottleneck(nn.Module):
    """torchvision's ResNet-50/101 block: stride on the 3x3 convolution (same parameter names)."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int):
        super().__init__()
        cout = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.downsample = _projection(cin, cout, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))

    def fuse(self) -> None:
        self.conv1, self.bn1 = _fold_bn(self.conv1, self.bn1), nn.Identity()
        self.conv2, self.bn2 = _fold_bn(self.conv2, self.bn2), nn.Identity()
        self.conv3, self.bn3 = _fold_bn(self.conv3, self.bn3), nn.Identity()
        if self.downsample is not None:
            self.downsample = nn.Sequential(_fold_bn(self.downsample[0], self.downsample[1]))


def _projection(cin: int, cout: int, stride: int) -> nn.Sequential | None:
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


class ResNetBody(nn.Sequential):
    """A torchvision ResNet without its pooling and classifier, as fastai's ``create_body`` cuts it.

    Children 0-7 are conv1, bn1, relu, maxpool, layer1..layer4. The forward pass
    returns the features the U-Net takes, at strides 2, 4, 8, 16 and 32 (the
    outputs of relu, layer1, layer2, layer3 and layer4).
    """

    def __init__(self, blocks: tuple[int, ...], bottleneck: bool):
        block = Bottleneck if bottleneck else BasicBlock
        stages: list[nn.Module] = []
        cin = 64
        for stage, repeats in enumerate(blocks):
            width = 64 * 2**stage
            layers = []
            for i in range(repeats):
                layers.append(block(cin, width, 2 if (i == 0 and stage > 0) else 1))
                cin = width * block.expansion
            stages.append(nn.Sequential(*layers))
        super().__init__(
            nn.Conv2d(3, 64, 7, 2, 3, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
            *stages,
        )
        self.channels = (64, *(64 * 2**s * block.expansion for s in range(4)))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # type: ignore[override]
        stem_conv, stem_bn, _, pool, *stages = self
        x = F.relu(stem_bn(stem_conv(x)))
        features = [x]
        x = pool(x)
        for stage in stages:
            x = stage(x)
            features.append(x)
        return features

    def fuse(self) -> None:
        self[0], self[1] = _fold_bn(self[0], self[1]), nn.Identity()
        for stage in list(self)[4:]:
            for block in stage.children():
                assert isinstance(block, (BasicBlock, Bottleneck))
                block.fuse()


# --- the U-Net ----------------------------------------------------------------------------------------


def _conv_relu_bn(cin: int, cout: int, attention: bool = False) -> nn.Sequential:
    """DeOldify's ``custom_conv_layer`` with spectral norm and its extra batch norm: conv, ReLU, BN(, attention).

    The batch norm comes after the ReLU, so it cannot be folded into the convolution.
    """
    layers: list[nn.Module] = [
        _SpectralConv2d(cin, cout, 3, padding=1, bias=False),
        nn.ReLU(inplace=True),
        nn.BatchNorm2d(cout),
    ]
    if attention:
        layers.append(SelfAttention(cout))
    return nn.Sequential(*layers)


class SelfAttention(nn.Module):
    """fastai's SelfAttention (SAGAN): x + gamma * attention over all positions, keys and queries of C/8 channels.

    The original takes softmax(query^T key) over the query axis and multiplies the
    values by it, so each output position j is a mix over positions i weighted by
    softmax_i(query_i . key_j): attention with the key projection as the query side,
    and no 1/sqrt(d) scale.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.query = _SpectralConv1d(channels, channels // 8, 1, bias=False)
        self.key = _SpectralConv1d(channels, channels // 8, 1, bias=False)
        self.value = _SpectralConv1d(channels, channels, 1, bias=False)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        flat = x.reshape(batch, channels, height * width)
        # (B, 1, positions, channels); fp32, since unscaled dot products may overflow fp16
        as_query, as_key, values = (
            p(flat).float().transpose(1, 2).unsqueeze(1) for p in (self.key, self.query, self.value)
        )
        mixed = F.scaled_dot_product_attention(as_query, as_key, values, scale=1.0).squeeze(1).transpose(1, 2)
        return (flat + self.gamma * mixed.to(x.dtype)).reshape(batch, channels, height, width)


class PixelShuffleUp(nn.Module):
    """2x upsampling: 1x1 conv to 4x the channels (+ BN), ReLU, pixel shuffle, then a 2x2 blur.

    The blur (replicate-pad left and top by one, 2x2 mean) is applied in both of
    the original's upsamplers whatever their ``blur`` argument: they test the
    blur module itself, which is always truthy.
    """

    def __init__(self, cin: int, cout: int, batch_norm: bool):
        super().__init__()
        if batch_norm:  # DeOldify's CustomPixelShuffle_ICNR: spectral-normed conv without bias, then BN
            self.conv = nn.Sequential(_SpectralConv2d(cin, cout * 4, 1, bias=False), nn.BatchNorm2d(cout * 4))
        else:  # fastai's PixelShuffle_ICNR: weight-normed conv with bias
            self.conv = nn.Sequential(_WeightNormConv2d(cin, cout * 4, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pixel_shuffle(F.relu(self.conv(x)), 2)
        return F.avg_pool2d(F.pad(x, (1, 0, 1, 0), mode="replicate"), 2, stride=1)

    def fuse(self) -> None:
        if len(self.conv) == 2:
            self.conv = nn.Sequential(_fold_bn(self.conv[0], self.conv[1]))


class UnetBlock(nn.Module):
    """Upsample, concatenate with the batch-normed skip features, ReLU, then the block's convolutions.

    ``deep`` is DeOldify's UnetBlockDeep (conv1, conv2), else UnetBlockWide (conv);
    the last convolution carries the self-attention when ``attention``.
    """

    def __init__(self, up_in: int, skip: int, up_out: int, out: int, deep: bool, attention: bool):
        super().__init__()
        self.shuf = PixelShuffleUp(up_in, up_out, batch_norm=True)
        self.bn = nn.BatchNorm2d(skip)
        if deep:
            self.conv1 = _conv_relu_bn(up_out + skip, out)
            self.conv2 = _conv_relu_bn(out, out, attention)
        else:
            self.conv = _conv_relu_bn(up_out + skip, out, attention)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = self.shuf(x)
        if up.shape[-2:] != skip.shape[-2:]:  # odd sizes in the body: 2x of a rounded-up size is one too many
            up = F.interpolate(up, size=skip.shape[-2:], mode="nearest")
        x = F.relu(torch.cat((up, self.bn(skip)), dim=1))
        if hasattr(self, "conv"):
            return self.conv(x)
        return self.conv2(self.conv1(x))


class ResBlock(nn.Module):
    """fastai's res_block with spectral norm: x + (conv, ReLU, conv, ReLU)(x), convolutions with bias."""

    def __init__(self, channels: int):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Sequential(_SpectralConv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True)) for _ in range(2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layers[1](self.layers[0](x))


class DeOldifyGenerator(nn.Module):
    """ImageNet-normalized RGB (B, 3, S, S) -> normalized RGB in (-3, 3), S a multiple of 2.

    ``layers`` holds the modules at the indices of DeOldify's DynamicUnetDeep/Wide:
    0 body, 1 its output's batch norm, 2 ReLU, 3 middle convolutions, 4-7 U-Net
    blocks, 8 final upsampler, 9 concatenation with the input, 10 residual block,
    11 1x1 convolution to RGB, 12 sigmoid range. The modules without parameters
    are placeholders here; the forward pass applies their operations itself.
    """

    def __init__(self, variant: Variant):
        super().__init__()
        body = ResNetBody(variant.blocks, variant.bottleneck)
        stride2, stride4, stride8, stride16, bottom = body.channels
        middle = nn.Sequential(_conv_relu_bn(bottom, bottom * 2), _conv_relu_bn(bottom * 2, bottom))
        blocks = []
        up_in = bottom
        for i, skip in enumerate((stride16, stride8, stride4, stride2)):
            last = i == 3
            attention = i == 1  # the original: self_attention and i == len(blocks) - 3
            if variant.unet == "deep":
                up_out = up_in // 2
                joined = up_out + skip
                out = int((joined // 2 if last else joined) * variant.nf_factor)
            else:
                n_out = int(512 * variant.nf_factor) // (2 if last else 1)
                up_out = out = n_out // 2
            blocks.append(UnetBlock(up_in, skip, up_out, out, deep=variant.unet == "deep", attention=attention))
            up_in = out
        joined = up_in + 3  # the upsampled features and the input image
        self.layers = nn.ModuleList(
            [
                body,
                nn.BatchNorm2d(bottom),
                nn.Identity(),
                middle,
                *blocks,
                PixelShuffleUp(up_in, up_in, batch_norm=False),
                nn.Identity(),
                ResBlock(joined),
                nn.Sequential(_SpectralConv2d(joined, 3, 1)),
                nn.Identity(),
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        body, body_bn, _, middle, *blocks, upsample, _, refine, to_rgb, _ = self.layers
        features = body(x)
        y = middle(F.relu(body_bn(features[-1])))
        for block, skip in zip(blocks, reversed(features[:-1])):
            y = block(y, skip)
        y = refine(torch.cat((upsample(y), x), dim=1))
        low, high = Y_RANGE
        return torch.sigmoid(to_rgb(y)) * (high - low) + low

    def fuse(self) -> None:
        """Fold every batch norm that directly follows a convolution into it (inference only)."""
        for module in list(self.modules()):
            if isinstance(module, (ResNetBody, PixelShuffleUp)):
                module.fuse()


@torch.no_grad()
def _fold_bn(conv: nn.Module, bn: nn.Module) -> nn.Conv2d:
    """``conv`` with the eval-mode batch norm after it folded into its weight and bias."""
    assert isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)
    return torch.nn.utils.fusion.fuse_conv_bn_eval(conv, bn)


# --- the colorizer: Lab lightness in, Lab ab out ------------------------------------------------------


class DeOldifyColorizer(SquareInputColorizer):
    """Lab L (B, 1, h, w) in 0..100 -> Lab ab (B, 2, h, w), with DeOldify's pre- and post-processing.

    As DeOldify's ColorizerFilter: the gray frame (R = G = B) is stretched to a
    square of ``render_factor * 16`` pixels, ImageNet-normalized, colored by the
    generator, denormalized and clipped to 0..1, and stretched back to h x w.
    Both stretches are ``F.interpolate(mode="bilinear", antialias=True,
    align_corners=False)``, torch's port of the PIL BILINEAR filter the original
    uses: on float pictures the two agree to 1e-5 in both directions, where
    torch's plain bilinear is off by up to 0.46 when it shrinks. The original
    also rounds to 8 bits before and after the network; here everything stays float.

    The original then keeps the input's luma and takes the network's chroma in
    Y'CbCr (OpenCV's YUV); colorvid keeps the frame's own Lab L and takes a and b
    of the network's RGB, so hue and saturation come from the network either way
    but the split between lightness and color follows Lab here.
    """

    mean: torch.Tensor
    std: torch.Tensor
    gray_weights: torch.Tensor

    def __init__(self, generator: DeOldifyGenerator, variant: str, render_factor: int):
        super().__init__()
        self.generator = generator
        self.variant = variant
        self.render_factor = int(render_factor)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("gray_weights", torch.tensor(_GRAY_WEIGHTS).view(1, 3, 1, 1), persistent=False)

    @property
    def render_size(self) -> int:
        """What --render-size sets for this family: the render factor."""
        return self.render_factor

    @property
    def square_size(self) -> int:
        """The side in pixels of the square the generator sees."""
        return render_pixels(self.render_factor)


    def forward(self, lightness: torch.Tensor) -> torch.Tensor:
        out_dtype = lightness.dtype
        lightness = lightness.float()
        height, width = lightness.shape[-2:]
        zeros = torch.zeros_like(lightness)
        rgb = lab_to_rgb(torch.cat((lightness, zeros, zeros), dim=1))
        # the original's convert("LA").convert("RGB"); a no-op up to rounding for a gray
        gray = (rgb * self.gray_weights).sum(dim=1, keepdim=True).expand(-1, 3, -1, -1)
        size = self.square_size
        square = F.interpolate(gray, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        dtype = next(self.generator.parameters()).dtype
        out = self.generator(((square - self.mean) / self.std).to(dtype)).float()
        color = (out * self.std + self.mean).clamp(0, 1)
        color = F.interpolate(color, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
        return rgb_to_lab(color.clamp(0, 1))[:, 1:].to(out_dtype)


# --- files --------------------------------------------------------------------------------------------


def read_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state dict of a DeOldify weights file: a torch pickle, read with ``weights_only``.

    Accepts ``{"model": state}``, ``{"params": state}`` or a bare state dict
    (DeOldify's loader, fastai's Learner.load, reads a bare state dict or
    ``{"model": ..., "opt": ...}``; other keys beside "model" are ignored, but an
    optimizer state as fastai pickles it holds globals that are refused).

    Raises:
        ModelFileError: not a torch pickle, one that needs globals ``weights_only``
            refuses (anything that could run code when read), or no state dict.
    """
    return read_state_dict(path)


def matches(state: Mapping[str, torch.Tensor]) -> str | None:
    """The layout of a DeOldify generator state dict ("deoldify-artistic" or "deoldify-stable"), else None.

    Decided by a few keys only, so a damaged file of this family is still
    recognized and :func:`load` can name what is wrong with it.
    """

    def has(key: str, ndim: int | None = None) -> bool:
        value = state.get(key)
        return isinstance(value, torch.Tensor) and (ndim is None or value.dim() == ndim)

    generator = (
        has("layers.0.0.weight", 4)  # the ResNet stem
        and has("layers.4.shuf.conv.0.weight_orig", 4)  # the first U-Net block's upsampler
        and has("layers.8.conv.0.weight_g", 4)  # the final upsampler
        and has("layers.11.0.weight_orig", 4)  # the 1x1 convolution to RGB
    )
    if not generator:
        return None
    bottleneck = has("layers.0.4.0.conv3.weight")
    deep = has("layers.4.conv1.0.weight_orig")
    wide = has("layers.4.conv.0.weight_orig")
    if deep and not wide and not bottleneck:
        return ARTISTIC
    if wide and not deep and bottleneck:
        return STABLE
    return None


def file_layout(generator: DeOldifyGenerator) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor a weights file of this (unfused) generator stores, as the original saves it."""
    normed = {
        name: module for name, module in generator.named_modules() if isinstance(module, (SpectralNormed, WeightNormed))
    }
    layout = {}
    for key, value in generator.state_dict().items():
        owner, _, name = key.rpartition(".")
        module = normed.get(owner)
        shape = tuple(value.shape)
        if module is None or name != "weight":
            layout[key] = shape
        elif isinstance(module, SpectralNormed):
            layout[f"{owner}.weight_orig"] = shape
            layout[f"{owner}.weight_u"] = (shape[0],)
            layout[f"{owner}.weight_v"] = (int(torch.Size(shape[1:]).numel()),)
        else:
            layout[f"{owner}.weight_g"] = (shape[0],) + (1,) * (len(shape) - 1)
            layout[f"{owner}.weight_v"] = shape
    return layout


def _optional(key: str) -> bool:
    return key.endswith(".num_batches_tracked")  # a training counter that inference never reads


def fold_norms(state: Mapping[str, torch.Tensor], generator: DeOldifyGenerator) -> dict[str, torch.Tensor]:
    """The file's state with spectral and weight norms folded into plain ``weight`` tensors.

    Spectral norm as torch's ``spectral_norm`` computes it in eval mode (no power
    iteration): W = W_orig / sigma, sigma = u . (W_orig as a matrix) v with the
    stored u and v. Weight norm: W = g * v / |v|, the norm over all but dim 0.
    """
    folded = dict(state)
    for owner, module in generator.named_modules():
        if isinstance(module, SpectralNormed):
            weight = folded.pop(f"{owner}.weight_orig")
            u, v = folded.pop(f"{owner}.weight_u"), folded.pop(f"{owner}.weight_v")
            sigma = torch.dot(u, torch.mv(weight.reshape(weight.shape[0], -1), v))
            folded[f"{owner}.weight"] = weight / sigma
        elif isinstance(module, WeightNormed):
            g, v = folded.pop(f"{owner}.weight_g"), folded.pop(f"{owner}.weight_v")
            norm = v.reshape(v.shape[0], -1).norm(dim=1).view(-1, *(1,) * (v.dim() - 1))
            folded[f"{owner}.weight"] = v * (g / norm)
    return folded


def build_generator(layout: str, device: torch.device | str | None = None) -> DeOldifyGenerator:
    """An unfused generator of a layout ("deoldify-artistic" or "deoldify-stable"), randomly initialized."""
    with torch.device(device or "cpu"):
        return DeOldifyGenerator(VARIANTS[LAYOUT_OF[layout]])


def _checked_layout(state: Mapping[str, torch.Tensor], generator: DeOldifyGenerator) -> None:
    expected = file_layout(generator)
    unexpected = sorted(k for k in state if k not in expected)
    missing = sorted(k for k in expected if k not in state and not _optional(k))
    problems = []
    if unexpected:
        problems.append(f"unexpected {_listed(unexpected)}")
    if missing:
        problems.append(f"missing {_listed(missing)}")
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != expected[k]]
    if wrong:
        k = wrong[0]
        problems.append(
            f"{len(wrong)} with the wrong shape, e.g. {k} is {tuple(state[k].shape)}, expected {expected[k]}"
        )
    if problems:
        raise ModelFileError("weights do not match the DeOldify generator: " + "; ".join(problems))


def _listed(keys: list[str], most: int = 5) -> str:
    more = f" and {len(keys) - most} more" if len(keys) > most else ""
    return f"{len(keys)} key{'s' if len(keys) > 1 else ''}: {', '.join(keys[:most])}{more}"


def check(path: str | os.PathLike) -> None:
    """Raise ModelFileError unless ``path`` is a DeOldify generator file (does not build the network)."""
    if matches(read_state(path)) is None:
        raise ModelFileError("not a DeOldify generator (ResNet-34 deep or ResNet-101 wide U-Net) state dict")


def load(
    path: str | os.PathLike,
    device: torch.device | str = "cpu",
    half: bool = False,
    fuse: bool = True,
    optimize: bool = False,
    render_size: int | None = None,
    *,
    variant: str | None = None,
) -> DeOldifyColorizer:
    """Load a DeOldify generator file for inference (see :func:`from_state`).

    Raises:
        ModelFileError: not a DeOldify generator file, or one whose tensors do not
            all match the layout (the message names the keys).
        ValueError: ``render_size`` is not a positive render factor.
    """
    return from_state(read_state(path), device, half, fuse, optimize, render_size, variant=variant)


def from_state(
    state: Mapping[str, torch.Tensor],
    device: torch.device | str = "cpu",
    half: bool = False,
    fuse: bool = True,
    optimize: bool = False,
    render_size: int | None = None,
    *,
    variant: str | None = None,
) -> DeOldifyColorizer:
    """A DeOldify generator state dict made ready for inference: a :class:`DeOldifyColorizer` in eval mode.

    ``render_size`` is a render factor (the square side is 16x it); None takes the
    variant's default. ``variant`` may name "deoldify-video" for the video weights
    (the stable layout with its default render factor of 21); otherwise the
    layout found in the state names it. ``half`` runs the generator in fp16
    (meant for CUDA); ``fuse`` folds batch norms into the convolutions before
    them. ``optimize`` is accepted for the loader's common interface and changes
    nothing here.

    Raises:
        ModelFileError: not a DeOldify generator, or one whose tensors do not
            all match the layout (the message names the keys).
        ValueError: ``render_size`` is not a positive render factor.
    """
    del optimize
    if render_size is not None and int(render_size) < 1:
        raise ValueError(f"DeOldify's render factor must be positive, not {render_size}")
    layout = matches(state)
    if layout is None:
        raise ModelFileError("not a DeOldify generator (ResNet-34 deep or ResNet-101 wide U-Net) state dict")
    name = variant or layout
    if LAYOUT_OF.get(name) != layout:
        raise ModelFileError(f"the file holds the {layout} layout, not {name}")
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    generator = build_generator(layout, device="meta")
    _checked_layout(state, generator)
    weights = fold_norms(state, generator)
    del state
    for key, value in generator.state_dict().items():
        if _optional(key) and key not in weights:
            weights[key] = torch.zeros_like(value, device="cpu")
    generator.load_state_dict(weights, strict=True, assign=True)
    generator.eval()
    if fuse:
        generator.fuse()
    factor = DEFAULT_RENDER_FACTOR[name] if render_size is None else int(render_size)
    model = DeOldifyColorizer(generator, name, factor).eval()
    model.to(device)
    if half:
        model.generator.to(HALF_DTYPE)
    return model
