"""colorvid's own colorizer family ("effnet-lite0-unet"): EfficientNet-Lite0 encoder on L, U-Net decoder to ab.

The network sees L (0..100) at the inference size, whose sides are multiples
of 32, and predicts ab at a quarter of that size. Two heads share the decoder:
a classification head over quantized ab bins (read out by annealed mean, as in
Zhang et al. 2016) and a regression head; the weights file says which one
inference uses. An optional confidence head scales the regression's colors
down where the classification head is torn between hues (see
:class:`ConfidenceHead`). Everything inference needs (bins, read-out temperature,
architecture settings) is stored in the safetensors file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from colorvid.errors import ModelFileError

ARCHITECTURE = "effnet-lite0-unet"
FORMAT_VERSION = "1"
OUTPUT_STRIDE = 4  # ab is predicted at 1/4 of the input size
INPUT_MULTIPLE = 32  # input sides must be multiples of the encoder's stride
DEFAULT_RENDER_SIZE = 256  # short side of the network's input, the size it was trained at
# Input pixels per call of the frozen CPU graph: a batch runs through it two 256x448 frames at a
# time. One such frame's largest activation is 11 MB; with eight at once the activations spill
# out of the caches and the network took 45 ms/frame instead of 35 (2-core EPYC, 16 MB L3).
CPU_PIXELS_PER_CALL = 2 * 256 * 448
# Fitting the read-out to keyframes (--keyframes-fit; docs/experiments.md, 2026-12-04): 100 Adam
# steps at 1e-3 fit it in under a second on a CPU; keyframes and pixels are capped so that a folder
# of hundreds costs seconds, not minutes (one 256x448 keyframe gives 7168 feature pixels).
FIT_STEPS = 100
FIT_LEARNING_RATE = 1e-3
FIT_MAX_KEYFRAMES = 48
FIT_MAX_PIXELS = 1 << 16
FIT_GAIN_RANGE = (1.0, 2.0)

# EfficientNet-Lite0 stages: (expand ratio, kernel, stride, out channels, repeats).
_LITE0_STAGES = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)
_BN_EPS = 1e-3


@dataclass(frozen=True)
class ModelConfig:
    decoder_channels: tuple[int, int, int] = (128, 96, 64)  # at strides 16, 8, 4
    ab_bins: int = 0  # number of quantized ab classes; 0 = regression only
    readout: str = "regression"  # "regression" or "annealed-mean"
    temperature: float = 0.38
    temporal_head: bool = False  # a TemporalHead follows the decoder (the previous-frame model)
    confidence_head: bool = False  # a ConfidenceHead scales the regression read-out
    confidence_gain: float = 1.0  # ab = regression * gain * confidence
    extra: dict = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        data = json.loads(text)
        data["decoder_channels"] = tuple(data["decoder_channels"])
        return cls(**data)


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout, eps=_BN_EPS),
    ]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class MBConv(nn.Module):
    """Inverted residual block of EfficientNet-Lite (no squeeze-excite, ReLU6)."""

    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int):
        super().__init__()
        mid = cin * expand
        self.expand = _conv_bn(cin, mid, 1) if expand != 1 else nn.Identity()
        self.depthwise = _conv_bn(mid, mid, kernel, stride, groups=mid)
        self.project = _conv_bn(mid, cout, 1, act=False)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.depthwise(self.expand(x)))
        return x + y if self.residual else y


class Encoder(nn.Module):
    """EfficientNet-Lite0 without its head; returns features at strides 4, 8, 16, 32."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = _conv_bn(1, 32, 3, 2)
        blocks = []
        cin = 32
        for expand, kernel, stride, cout, repeats in _LITE0_STAGES:
            for i in range(repeats):
                blocks.append(MBConv(cin, cout, expand, kernel, stride if i == 0 else 1))
                cin = cout
        self.blocks = nn.ModuleList(blocks)
        # indices of the last block at strides 4, 8, 16 and 32
        self.taps = (2, 4, 10, 15)
        self.tap_channels = (24, 40, 112, 320)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        feats = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.taps:
                feats.append(x)
        return feats


class UpBlock(nn.Module):
    def __init__(self, cin: int, cskip: int, cout: int):
        super().__init__()
        self.reduce = _conv_bn(cin, cout, 1)
        self.fuse = nn.Sequential(
            _conv_bn(cout + cskip, cout + cskip, 3, groups=cout + cskip),
            _conv_bn(cout + cskip, cout, 1),
            _conv_bn(cout, cout, 3, groups=cout),
            _conv_bn(cout, cout, 1),
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(self.reduce(x), scale_factor=2.0, mode="bilinear", align_corners=False)
        return self.fuse(torch.cat((x, skip), dim=1))


class Colorizer(nn.Module):
    ab_centers: torch.Tensor  # a buffer, registered when the config has ab_bins

    def __init__(self, config: ModelConfig, ab_centers: torch.Tensor | None = None):
        super().__init__()
        self.config = config
        self.render_size = DEFAULT_RENDER_SIZE  # short side of the input at inference
        self.encoder = Encoder()
        c16, c8, c4 = config.decoder_channels
        t4, t8, t16, t32 = self.encoder.tap_channels
        self.up16 = UpBlock(t32, t16, c16)
        self.up8 = UpBlock(c16, t8, c8)
        self.up4 = UpBlock(c8, t4, c4)
        self.regress = nn.Conv2d(c4, 2, 1)
        if config.ab_bins:
            self.classify = nn.Conv2d(c4, config.ab_bins, 1)
            centers = ab_centers if ab_centers is not None else torch.zeros(config.ab_bins, 2)
            self.register_buffer("ab_centers", centers.float().clone())
        else:
            self.classify = None
        self.temporal = TemporalHead(c4) if config.temporal_head else None
        self.confidence = ConfidenceHead(c4) if config.confidence_head else None

    def inference_size(self, height: int, width: int) -> tuple[int, int]:
        return inference_size(height, width, self.render_size)

    @property
    def input_dtype(self) -> torch.dtype:
        return self.regress.weight.dtype

    def features(self, lightness: torch.Tensor) -> torch.Tensor:
        f4, f8, f16, f32 = self.encoder(lightness / 50.0 - 1.0)
        return self.up4(self.up8(self.up16(f32, f16), f8), f4)

    def heads(self, lightness: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Training view: (ab regression in Lab units, class logits or None)."""
        x = self.features(lightness)
        logits = self.classify(x) if self.classify is not None else None
        return self.regress(x) * 110.0, logits

    def readout(self, features: torch.Tensor) -> torch.Tensor:
        if self.config.readout == "annealed-mean" and self.classify is not None:
            return annealed_mean(self.classify(features), self.ab_centers, self.config.temperature)
        ab = self.regress(features) * 110.0
        if self.confidence is not None:
            ab = ab * (self.config.confidence_gain * self.confidence(features))
        return ab

    def trunk(self, lightness: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """L -> (decoder features, this frame's own ab): what a TemporalHead needs."""
        x = self.features(lightness)
        return x, self.readout(x)

    def forward(self, lightness: torch.Tensor) -> torch.Tensor:
        """L (B, 1, H, W), H and W multiples of 32 -> ab (B, 2, H/4, W/4) in Lab units."""
        return self.readout(self.features(lightness))


class ConfidenceHead(nn.Module):
    """How sure the colorizer is of each pixel's hue, 0..1, from the decoder's features.

    The regression head predicts one color even where several are plausible
    (a wardrobe that may be brown or purple, a car seat that may be gray or
    blue), and a wrong hue costs more than no hue. The classification head
    shows that doubt as a posterior spread over opposite hues; this head is
    trained to predict :func:`hue_agreement` of that posterior, so inference
    gets the doubt for two 1x1 convolutions instead of the 261-bin head and
    its softmax at every pixel (the agreement is a per-pixel function of the
    same features, so no wider view is needed; a 3x3 version cost 10% of the
    network's time). The read-out is regression * gain * confidence.
    """

    def __init__(self, channels: int, hidden: int = 32):
        super().__init__()
        self.mix = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True))
        self.out = nn.Conv2d(hidden, 1, 1)
        assert self.out.bias is not None  # Conv2d has one by default
        nn.init.zeros_(self.out.weight)
        nn.init.constant_(self.out.bias, 2.0)  # starts near 1: the plain regression

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.out(self.mix(features)))


def hue_agreement(
    logits: torch.Tensor, centers: torch.Tensor, class_weights: torch.Tensor | None = None
) -> torch.Tensor:
    """|E[ab]| / E[|ab|] under the classification posterior, (B, 1, H, W) in 0..1.

    1 where the probable colors all share one hue, near 0 where they pull in
    opposite directions (or where the posterior sits on gray, which needs no
    hue). A head trained with class rebalancing predicts p * w; dividing the
    weights ``class_weights`` back out gives the posterior itself.
    """
    logits = logits.float()
    if class_weights is not None:
        logits = logits - torch.log(class_weights.float()).view(1, -1, 1, 1)
    p = torch.softmax(logits, dim=1)
    centers = centers.float()
    mean_ab = torch.einsum("bqhw,qc->bchw", p, centers).norm(dim=1, keepdim=True)
    mean_chroma = torch.einsum("bqhw,q->bhw", p, centers.norm(dim=1)).unsqueeze(1)
    return (mean_ab / mean_chroma.clamp(min=1e-3)).clamp(0, 1)


class TemporalHead(nn.Module):
    """The previous-frame model's last stage: how much of the previous output each pixel keeps.

    From the decoder's features, the frame's own ab, the previous output's ab
    warped onto this frame and the warp's confidence (all at the output size)
    it predicts a gate in 0..1; :func:`follow_previous` mixes with it. It comes
    after the heavy network, so a batch of frames runs through the encoder and
    decoder together and only this small stage runs frame after frame.

    It only mixes, never adds color of its own: the output is always between
    the frame's own colors and the previous output, so nothing can build up
    from frame to frame (an additive correction trained on single steps did,
    ending five times too saturated after a few dozen frames).
    """

    def __init__(self, channels: int, hidden: int = 32):
        super().__init__()
        self.mix = nn.Sequential(nn.Conv2d(channels + 5, hidden, 3, padding=1), nn.ReLU(inplace=True))
        self.out = nn.Conv2d(hidden, 1, 1)
        assert self.out.bias is not None  # Conv2d has one by default
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)  # starts as a confidence-weighted blend at half the strength

    def forward(
        self, features: torch.Tensor, own_ab: torch.Tensor, previous_ab: torch.Tensor, confidence: torch.Tensor
    ) -> torch.Tensor:
        # in the network's dtype (fp16 on CUDA), whatever the smoother's (fp32); the gate comes back in fp32
        dtype = self.out.weight.dtype
        inputs = (features, own_ab / 110.0, previous_ab / 110.0, confidence)
        x = torch.cat([t.to(dtype) for t in inputs], dim=1)
        return torch.sigmoid(self.out(self.mix(x))).float()


def follow_previous(
    gate: torch.Tensor, own_ab: torch.Tensor, previous_ab: torch.Tensor, confidence: torch.Tensor, strength: float
) -> torch.Tensor:
    """ab = own + strength * gate * confidence * (previous - own).

    ``strength`` caps how much of the previous colors a frame takes, so an earlier
    frame's weight decays at least as strength^k, as with the other smoothers;
    where the warp is not trusted (confidence 0: a cut, an occlusion) the frame
    keeps its own colors.
    """
    return torch.lerp(own_ab, previous_ab, strength * gate * confidence)


def annealed_mean(logits: torch.Tensor, centers: torch.Tensor, temperature: float) -> torch.Tensor:
    """Zhang et al. 2016: softmax(log p / T) weighted mean of the bin centers."""
    weights = torch.softmax(logits.float() / temperature, dim=1)
    return torch.einsum("bqhw,qc->bchw", weights, centers.float()).to(logits.dtype)


def fuse_conv_bn(model: nn.Module) -> nn.Module:
    """Fold every Conv2d+BatchNorm2d pair into one Conv2d (inference only)."""
    for name, child in model.named_children():
        split = _split_conv_bn(child)
        if split is not None:
            conv, norm, rest = split
            fused = torch.nn.utils.fusion.fuse_conv_bn_eval(conv, norm)
            setattr(model, name, nn.Sequential(fused, *rest))
        else:
            fuse_conv_bn(child)
    return model


def _split_conv_bn(module: nn.Module) -> tuple[nn.Conv2d, nn.BatchNorm2d, list[nn.Module]] | None:
    """(Conv2d, BatchNorm2d, the modules after them) of a Sequential that starts with that pair, else None."""
    if isinstance(module, nn.Sequential) and len(module) >= 2:
        conv, norm = module[0], module[1]
        if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d):
            return conv, norm, list(module)[2:]
    return None


def save_model(model: Colorizer, path: str | Path, half: bool = True, metadata: dict | None = None) -> None:
    """Write a self-contained safetensors file (fp16 by default)."""
    from safetensors.torch import save_file

    state = {
        k: v.detach().cpu().contiguous()
        for k, v in model.state_dict().items()
        if not k.endswith("num_batches_tracked")
    }
    if half:
        state = {k: (v.half() if v.is_floating_point() and k != "ab_centers" else v) for k, v in state.items()}
    meta = {"architecture": ARCHITECTURE, "format_version": FORMAT_VERSION, "config": model.config.to_json()}
    meta.update({k: str(v) for k, v in (metadata or {}).items()})
    save_file(state, str(path), metadata=meta)


def read_model_file(path: str | os.PathLike) -> tuple[ModelConfig, dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(f"not a safetensors model file ({exc})") from None
    if meta.get("architecture") != ARCHITECTURE:
        raise ModelFileError(f"unknown architecture {meta.get('architecture')!r} (expected {ARCHITECTURE!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ModelFileError(f"unsupported model format version {meta.get('format_version')!r}")
    return ModelConfig.from_json(meta["config"]), state, meta


def check(path: str | Path) -> None:
    """Raise ModelFileError unless ``path`` is a model file of this family that this version reads."""
    read_model_file(path)


def load(
    path: str | Path,
    device: torch.device | str = "cpu",
    half: bool = False,
    fuse: bool = True,
    optimize: bool = False,
    render_size: int | None = None,
) -> nn.Module:
    """Load a weights file for inference: eval mode, Conv+BN fused, channels_last.

    ``render_size`` is the short side of the network's input (default
    :data:`DEFAULT_RENDER_SIZE`; sides are then snapped to multiples of 32).
    ``optimize`` (CPU, fp32 only) also freezes the network into a TorchScript graph
    whose convolutions run fused with their activations: the same numbers, about
    1.4x faster on a CPU. The result is then an :class:`OptimizedColorizer`.
    """
    if render_size is not None and render_size < INPUT_MULTIPLE:
        raise ValueError(f"the render size is a short side of at least {INPUT_MULTIPLE} pixels, not {render_size}")
    config, state, _ = read_model_file(path)
    model = Colorizer(config)
    model.render_size = render_size or DEFAULT_RENDER_SIZE
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise ModelFileError(f"weights do not match the architecture ({str(exc).splitlines()[0]})") from None
    batch_counters = {k for k in model.state_dict() if k.endswith("num_batches_tracked")}
    missing = set(model.state_dict()) - set(state) - batch_counters
    if missing:
        raise ModelFileError(f"weights file lacks {len(missing)} tensors, e.g. {sorted(missing)[0]}")
    model.eval()
    if fuse:
        fuse_conv_bn(model)
    # Module.to's overloads take a device or a memory format, not both in one call.
    model = model.to(device=device).to(memory_format=torch.channels_last)
    return for_inference(model, half, optimize)


def for_inference(model: Colorizer, half: bool = False, optimize: bool = False) -> nn.Module:
    """A loaded (fp32) Colorizer in the form inference runs: fp16, frozen for the CPU, or as is."""
    if half:
        return model.half()
    if optimize and model.regress.weight.device.type == "cpu":
        return OptimizedColorizer(model)
    return model


def fit_readout(model: Colorizer, keyframes: Sequence[torch.Tensor]) -> float:
    """Fit the read-out (the 1x1 regression and the confidence head) to keyframes' colors, in place.

    ``keyframes``: RGB (3, H, W), floats in 0..1 or uint8, any sizes; each is seen
    at the size the network would see it, its lightness in (made from its luma, as a
    frame's is) and its ab as the target, over the decoder's features, which stay as trained. At most
    FIT_MAX_KEYFRAMES of them, evenly spread, and FIT_MAX_PIXELS feature pixels
    in all are used (a fixed draw, so that every run fits the same read-out). The
    regression is then scaled so that its mean chroma on the keyframes is theirs
    (within FIT_GAIN_RANGE): a fit to a few frames shrinks the colors it is unsure
    of towards gray. Returns that gain.

    Raises:
        ValueError: no keyframes, or a model read out by its classification head.
    """
    from colorvid.color import picture_lab

    if not keyframes:
        raise ValueError("no keyframes to fit to")
    if model.config.readout != "regression":
        raise ValueError("the model's colors come from its classification head (annealed mean), not a "
                         "regression that can be fitted")
    count = min(len(keyframes), FIT_MAX_KEYFRAMES)
    chosen = sorted({round(i * (len(keyframes) - 1) / max(1, count - 1)) for i in range(count)})
    per_keyframe = FIT_MAX_PIXELS // len(chosen)
    device = model.regress.weight.device
    draw = torch.Generator().manual_seed(0)
    features, targets = [], []
    with torch.no_grad():
        for index in chosen:
            rgb = keyframes[index]
            rgb = (rgb.float() / 255.0 if rgb.dtype == torch.uint8 else rgb.float()).to(device).unsqueeze(0)
            size = model.inference_size(rgb.shape[-2], rgb.shape[-1])
            rgb = F.interpolate(rgb, size=size, mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
            ab, lightness = picture_lab(rgb)
            feature = model.features(lightness.contiguous(memory_format=torch.channels_last))
            target = F.interpolate(ab, size=feature.shape[-2:], mode="area")
            feature, target = feature.flatten(2), target.flatten(2)
            if feature.shape[-1] > per_keyframe:
                pick = torch.randperm(feature.shape[-1], generator=draw)[:per_keyframe].to(device)
                feature, target = feature[..., pick], target[..., pick]
            features.append(feature)
            targets.append(target)
    # (1, C, pixels, 1): the read-out's 1x1 convolutions see the drawn pixels as a picture
    feature = torch.cat(features, dim=2).unsqueeze(-1)
    target = torch.cat(targets, dim=2).unsqueeze(-1)
    params = [*model.regress.parameters(), *(model.confidence.parameters() if model.confidence is not None else ())]
    optimizer = torch.optim.Adam(params, lr=FIT_LEARNING_RATE)
    with torch.enable_grad():
        for param in params:
            param.requires_grad_(True)
        for _ in range(FIT_STEPS):
            optimizer.zero_grad()
            F.smooth_l1_loss(model.readout(feature), target, beta=1.0).backward()
            optimizer.step()
    with torch.no_grad():
        chroma = model.readout(feature).norm(dim=1).mean().clamp(min=1e-3)
        gain = float((target.norm(dim=1).mean() / chroma).clamp(*FIT_GAIN_RANGE))
        model.regress.weight.mul_(gain)
        assert model.regress.bias is not None  # Conv2d has one by default
        model.regress.bias.mul_(gain)
    for param in params:
        param.requires_grad_(False)
        param.grad = None
    return gain


class OptimizedColorizer(nn.Module):
    """A Colorizer frozen into TorchScript for CPU inference (any input size)."""

    def __init__(self, model: Colorizer):
        import warnings

        super().__init__()
        self.config = model.config
        self.render_size = model.render_size
        example = torch.full((1, 1, 64, 64), 50.0).contiguous(memory_format=torch.channels_last)
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracing warns about Python-level shape arithmetic
            # with a temporal head, the trunk (features and own ab) and the head are two graphs
            self.graph_module = _freeze(model if model.temporal is None else _Trunk(model).eval(), (example,))
            self.temporal = None
            if model.temporal is not None:
                features, own = model.trunk(example)
                self.temporal = _freeze(model.temporal, (features, own, own, own[:, :1]))

    def inference_size(self, height: int, width: int) -> tuple[int, int]:
        return inference_size(height, width, self.render_size)

    @property
    def input_dtype(self) -> torch.dtype:
        return torch.float32

    def trunk(self, lightness: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.temporal is None:
            raise TypeError("this model has no temporal head")
        features, ab = zip(*(self.graph_module(part) for part in self._parts(lightness)))
        return torch.cat(features), torch.cat(ab)

    def forward(self, lightness: torch.Tensor) -> torch.Tensor:
        if self.temporal is not None:
            return self.trunk(lightness)[1]
        return torch.cat([self.graph_module(part) for part in self._parts(lightness)])

    def _parts(self, lightness: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The batch in slices of about CPU_PIXELS_PER_CALL pixels (the outputs are the same)."""
        height, width = lightness.shape[-2:]
        return lightness.split(max(1, CPU_PIXELS_PER_CALL // (height * width)))


def _freeze(module: nn.Module, example: tuple) -> torch.jit.ScriptModule:
    # check_trace would run the traced graph once more to compare it with the module: a second
    # (1 s) of every start for networks with no data-dependent branches; the tests compare them.
    traced = torch.jit.trace(module, example, check_trace=False)
    return torch.jit.optimize_for_inference(torch.jit.freeze(traced))


class _Trunk(nn.Module):
    def __init__(self, model: Colorizer):
        super().__init__()
        self.model = model

    def forward(self, lightness: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.trunk(lightness)


def inference_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """Network input size: short side about ``short_side``, both sides multiples of 32."""
    scale = short_side / min(height, width)

    def snap(v: float) -> int:
        return max(INPUT_MULTIPLE, int(round(v / INPUT_MULTIPLE)) * INPUT_MULTIPLE)

    return snap(height * scale), snap(width * scale)
