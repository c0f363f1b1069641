"""Colorizing decoded frames: luma in, chroma out, luma untouched.

For a batch of frames in a planar Y'CbCr format, the Y plane is the only
input: it becomes Lab lightness, goes through the network at the inference
size, and the predicted ab comes back up to the chroma planes' resolution by
a guided filter on L (so colors follow the image's edges), is turned into
Cb/Cr with the video's own matrix and range, and is written into the chroma
planes. The Y plane is never rewritten, so the output's luma is the input's.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import TypedDict

import av
import av.video.plane
import numpy as np
import torch
import torch.nn.functional as F
from av.video.reformatter import Colorspace, VideoReformatter
from numpy.typing import DTypeLike

from colorvid.color import (
    WORK_FORMATS,
    lab_to_rgb,
    luma_to_lightness,
    rgb_to_chroma,
    rgb_to_lab,
    sws_color_range,
    sws_colorspace,
)
from colorvid.errors import ColorizeError
from colorvid.models import Network
from colorvid.propagation import Ahead, KeyframeGuide, KeyframeLookahead
from colorvid.smoothing import ModelSmoother, MotionSmoother, TemporalSmoother

log = logging.getLogger("colorvid")

GUIDE_RADIUS = 2  # box radius of the guided filter, in model-output pixels
# ... for frames that take a keyframe's colors: a colorist's colors are exact, and a smaller window
# mixes fewer of them (neighbors of about the same luma); on two color clips with their first frame
# as keyframe, +0.7 dB and +2% colorfulness over radius 2 (the automatic colors lose 0.05 dB with it).
KEYED_GUIDE_RADIUS = 1
GUIDE_EPS = 1e-3  # regularization of the guided filter, for L scaled to 0..1


def box_filter(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Each channel's mean over a (2 * radius + 1)^2 window, of the pixels inside the image.

    As a sum along rows, then along columns (depthwise convolutions), divided by the
    pixels counted: several times faster on a CPU than avg_pool2d.
    """
    size = 2 * radius + 1
    channels = x.shape[1]
    ones = x.new_ones(channels, 1, 1, size)
    sums = F.conv2d(x, ones, padding=(0, radius), groups=channels)
    sums = F.conv2d(sums, ones.transpose(-1, -2), padding=(radius, 0), groups=channels)
    height, width = x.shape[-2:]
    return sums / (_window_counts(height, radius, x).view(-1, 1) * _window_counts(width, radius, x))


def _window_counts(length: int, radius: int, like: torch.Tensor) -> torch.Tensor:
    """How many pixels a window of ``radius`` centered on each position of an axis holds inside it."""
    position = torch.arange(length, device=like.device, dtype=like.dtype)
    return (position + radius).clamp(max=length - 1) - (position - radius).clamp(min=0) + 1


def guided_upsample(
    target_low: torch.Tensor, guide_low: torch.Tensor, guide_high: torch.Tensor, scale: float = 1.0,
    radius: int = GUIDE_RADIUS,
) -> torch.Tensor:
    """Fast guided filter (He et al.): fit target = a * guide + b in small windows at
    low resolution, upsample a and b smoothly, and apply them to the full-size guide.

    target_low (B, C, h, w); guide_low (B, 1, h, w) and guide_high (B, 1, H, W).
    ``scale`` brings the guide to about 0..1, the range GUIDE_EPS is meant for; ``radius`` is
    the windows' (in low-resolution pixels).
    """
    guide_low = guide_low * scale
    channels = target_low.shape[1]
    means = box_filter(torch.cat((guide_low, target_low, guide_low * target_low, guide_low * guide_low), dim=1),
                       radius)
    mean_i, mean_p, mean_ip, mean_ii = means.split((1, channels, channels, 1), dim=1)
    cov_ip = mean_ip - mean_i * mean_p
    var_i = mean_ii - mean_i * mean_i
    a = cov_ip / (var_i + GUIDE_EPS)
    b = mean_p - a * mean_i
    coefficients = box_filter(torch.cat((a * scale, b), dim=1), radius)
    coefficients = F.interpolate(coefficients, size=guide_high.shape[-2:], mode="bilinear", align_corners=False)
    return torch.addcmul(coefficients[:, channels:], coefficients[:, :channels], guide_high)


@dataclass
class _Plane:
    """A writable numpy view of one plane of a frame, without its line padding."""

    array: np.ndarray  # (height, width) of uint8 or uint16

    @classmethod
    def of(cls, plane: av.video.plane.VideoPlane, dtype: DTypeLike) -> _Plane:
        itemsize = np.dtype(dtype).itemsize
        # Through a memoryview: numpy's stubs for Python < 3.12 accept only built-in buffer types.
        buf = np.frombuffer(memoryview(plane), dtype=dtype).reshape(plane.height, plane.line_size // itemsize)
        return cls(buf[:, : plane.width])


class _ReformatArgs(TypedDict):
    """Matrix and range arguments of ``VideoReformatter.reformat`` (whose stubs take the enum, not the name)."""

    src_colorspace: Colorspace
    dst_colorspace: Colorspace
    src_color_range: str
    dst_color_range: str


class FrameColorizer:
    """Colorizes batches of frames of one video, in presentation order."""

    def __init__(
        self,
        model: Network,
        device: torch.device,
        matrix: str,
        full_range: bool = False,
        smooth: float = 0.0,
        temporal: str | None = None,
        source_matrix: str | None = None,
        source_full_range: bool | None = None,
        key_model: Network | None = None,
        key_every: float | None = None,
    ):
        """``matrix`` ("bt601", "bt709", "bt2020") and ``full_range`` describe the Y'CbCr
        the frames are written in; the ``source_`` pair, where it differs, the decoded
        frames' (they are converted on the way in).
        ``temporal`` ("none", "blend", "flow", "model"; None = "blend") picks the smoother,
        ``smooth`` its strength (0 = off whatever the mode); "model" needs a model with a
        temporal head (the previous-frame model). ``key_model`` colors each shot's first frame,
        and (``key_every``, seconds) a frame whenever that long has passed since its shot's
        last keyframe, as keyframes (this needs :meth:`read_ahead`)."""
        self.model = model
        self.device = device
        self.matrix = matrix
        self.full_range = full_range
        source_full_range = full_range if source_full_range is None else source_full_range
        self._reformat_args = _ReformatArgs(
            src_colorspace=Colorspace[sws_colorspace(source_matrix or matrix)],
            dst_colorspace=Colorspace[sws_colorspace(matrix)],
            src_color_range=sws_color_range(source_full_range),
            dst_color_range=sws_color_range(full_range),
        )
        # one scaler for the whole video: VideoFrame.reformat would set up a new one for every frame
        self._reformatter = VideoReformatter()
        if temporal == "model":
            if getattr(model, "temporal", None) is None:
                raise ColorizeError("--temporal model: this model has no previous-frame head "
                                    "(train one with 'colorvid train --previous-frame'), use --temporal flow")
            self.smoother: TemporalSmoother = ModelSmoother(smooth, model.temporal)
        elif temporal == "flow":
            self.smoother = MotionSmoother(smooth)
        else:
            self.smoother = TemporalSmoother(0.0 if temporal == "none" else smooth)
        self.guide = KeyframeGuide()
        self.lookahead: KeyframeLookahead | None = None
        self.key_model = key_model
        # the decimal as written (0.1 s is 1/10 s), to compare exactly with frame times
        self.key_every = None if key_every is None else Fraction(repr(float(key_every)))
        self._last_key_time: Fraction | None = None
        self.cuts = 0

    def read_ahead(self, frames: Iterable[tuple[av.VideoFrame, torch.Tensor | None]], work_format: str) -> None:
        """Carry keyframes backwards too, and pick the key model's keyframes: ``frames`` is a
        second pass over the frames :meth:`colorize_frames` will get, in the same order, each
        with its keyframe image (as ``keyframes`` takes them) or None. It may end after the
        last keyframe where there is no key model."""
        bit_depth, shift_w, shift_h = WORK_FORMATS[work_format]
        dtype = np.uint16 if bit_depth > 8 else np.uint8

        def luma(batch: list[av.VideoFrame]) -> torch.Tensor:
            planes = [_Plane.of(self._work_frame(frame, work_format).planes[0], dtype).array for frame in batch]
            return torch.from_numpy(np.stack(planes)).to(self.device).unsqueeze(1)

        @torch.inference_mode()
        def lightness(batch: list[av.VideoFrame], size: tuple[int, int]) -> torch.Tensor:
            y_codes = luma(batch)
            _, l_small = _network_input(self.model, y_codes, _downsample(y_codes, shift_h, shift_w), bit_depth,
                                        self.full_range)
            return F.interpolate(l_small, size=size, mode="area")

        @torch.inference_mode()
        def model_key(frame: av.VideoFrame, cut: bool, painted: bool, size: tuple[int, int]) -> torch.Tensor | None:
            time = frame.pts * frame.time_base if frame.pts is not None and frame.time_base is not None else None
            last, every = self._last_key_time, self.key_every
            due = cut or (every is not None and time is not None and last is not None and time - last >= every)
            if painted or due:
                self._last_key_time = time
            if painted or not due:
                return None
            y_codes = luma([frame])
            return self._key_model_colors(y_codes, _downsample(y_codes, shift_h, shift_w), size, bit_depth)

        self.lookahead = KeyframeLookahead(frames, lightness, model_key if self.key_model is not None else None)

    def _work_frame(self, frame: av.VideoFrame, work_format: str) -> av.VideoFrame:
        """The frame in the work format and the output's Y'CbCr (the frame itself if it is already)."""
        return self._reformatter.reformat(frame, format=work_format, **self._reformat_args)

    def _key_model_colors(self, y_codes: torch.Tensor, y_chroma: torch.Tensor, size: tuple[int, ...],
                          bit_depth: int) -> torch.Tensor:
        """The key model's ab (1, 2, h, w) of one frame, at ``size`` (the main model's output size)."""
        key_model = self.key_model
        assert key_model is not None
        _, lightness = _network_input(key_model, y_codes, y_chroma, bit_depth, self.full_range)
        ab = key_model(lightness.to(key_model.input_dtype).contiguous(memory_format=torch.channels_last)).float()
        return F.interpolate(ab, size=size, mode="bilinear", antialias=True, align_corners=False)

    @torch.inference_mode()
    def colorize_frames(
        self,
        frames: list[av.VideoFrame],
        work_format: str,
        keyframes: Mapping[int, torch.Tensor] | None = None,
        shot_keyframes: Mapping[int, torch.Tensor] | None = None,
    ) -> list[av.VideoFrame]:
        """Frames of any format -> new frames in ``work_format`` with predicted chroma.

        ``keyframes`` maps a frame's index in ``frames`` to a colorist's color image of
        it (RGB (3, H, W) in 0..1, any size), whose colors are carried through its shot
        (:class:`~colorvid.propagation.KeyframeGuide`); ``shot_keyframes`` are such
        images offered for any frame, taken where a shot starts. Output frames carry
        the input frames' pts and time_base.
        """
        bit_depth, shift_w, shift_h = WORK_FORMATS[work_format]
        full_range = self.full_range
        dtype = np.uint16 if bit_depth > 8 else np.uint8
        out_frames = []
        lumas = []
        for frame in frames:
            out = self._work_frame(frame, work_format)
            if out is frame:  # already in the work format: never write into the caller's frame
                out = _copy_frame(frame, dtype)
            out.pts = frame.pts
            if frame.time_base is not None:
                out.time_base = frame.time_base
            out_frames.append(out)
            lumas.append(_Plane.of(out.planes[0], dtype).array)
        y_codes = torch.from_numpy(np.stack(lumas)).to(self.device, non_blocking=True).unsqueeze(1)
        height, width = y_codes.shape[-2:]
        chroma_h = -(-height // (1 << shift_h))
        chroma_w = -(-width // (1 << shift_w))
        # Y over each chroma sample's footprint: the guide at the chroma planes' size.
        # The network's input is made from it too (an antialiased resize), which is
        # cheaper than from full-size Y and loses nothing when the network's input is
        # smaller; a family that sees more (a large square) gets it from full-size Y.
        y_chroma = _downsample(y_codes, shift_h, shift_w)

        y_small, l_small = _network_input(self.model, y_codes, y_chroma, bit_depth, full_range)
        model_in = l_small.to(self.model.input_dtype).contiguous(memory_format=torch.channels_last)
        features = None
        if isinstance(self.smoother, ModelSmoother):
            features, ab_low = self.model.trunk(model_in)
        else:
            ab_low = self.model(model_in)
        ab_low = ab_low.float()

        # Colors are turned into Cb/Cr at the model's small size, then brought up to the
        # chroma planes' size by a guided filter on luma: at full size only a
        # multiply-add per sample remains, whatever the frame size.
        l_low = F.interpolate(l_small, size=ab_low.shape[-2:], mode="area")
        ab_low, cuts = self.smoother(ab_low, l_low, features)
        self.cuts += int(cuts[1:].sum()) if len(cuts) > 1 else 0
        keyframes = dict(keyframes or {})
        for i, image in (shot_keyframes or {}).items():
            if bool(cuts[i]):
                keyframes.setdefault(i, image)
        assert self.key_model is None or self.lookahead is not None, "the key model's keyframes come from read_ahead"
        if self.lookahead is not None:
            ahead = self.lookahead.take(len(frames), (l_low.shape[-2], l_low.shape[-1]))
        else:
            ahead = [Ahead()] * len(frames)
        model_keys = {i: a.model_key for i, a in enumerate(ahead) if a.model_key is not None and i not in keyframes}
        ab_low, keyed = self.guide(ab_low, l_low, cuts, keyframes, model_keys, [a.carried for a in ahead])
        chroma_low = rgb_to_chroma(lab_to_rgb(torch.cat((l_low, ab_low), dim=1)), self.matrix, full_range, bit_depth)
        y_low = F.interpolate(y_small, size=ab_low.shape[-2:], mode="area")
        if keyed.any():
            chroma = torch.empty(len(frames), 2, *y_chroma.shape[-2:], device=y_chroma.device)
            for group, radius in ((keyed, KEYED_GUIDE_RADIUS), (~keyed, GUIDE_RADIUS)):
                if group.any():
                    group = group.to(chroma.device)
                    chroma[group] = guided_upsample(chroma_low[group], y_low[group], y_chroma[group],
                                                    1.0 / (1 << bit_depth), radius)
        else:
            chroma = guided_upsample(chroma_low, y_low, y_chroma, scale=1.0 / (1 << bit_depth))
        peak = (1 << bit_depth) - 1
        # int16 holds every 8- and 10-bit code value; the uint views below reinterpret it
        chroma = chroma.round_().clamp_(0, peak).to(torch.uint8 if bit_depth == 8 else torch.int16).cpu().numpy()
        chroma = chroma.view(dtype)
        assert chroma.shape[-2:] == (chroma_h, chroma_w), (chroma.shape, chroma_h, chroma_w)
        for i, out in enumerate(out_frames):
            _Plane.of(out.planes[1], dtype).array[...] = chroma[i, 0]
            _Plane.of(out.planes[2], dtype).array[...] = chroma[i, 1]
        return out_frames


def _network_input(model: Network, y_codes: torch.Tensor, y_chroma: torch.Tensor, bit_depth: int,
                   full_range: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(Y', Lab L) at the model's input size, in fp32, from a batch's luma: resized from the
    chroma-size luma where the model's input is no larger, else from full-size luma."""
    height, width = y_codes.shape[-2:]
    in_h, in_w = model.inference_size(height, width)
    source = y_chroma if in_h <= y_chroma.shape[-2] and in_w <= y_chroma.shape[-1] else y_codes.float()
    y_small = F.interpolate(source, size=(in_h, in_w), mode="bilinear", antialias=True, align_corners=False)
    l_small = luma_to_lightness(y_small, bit_depth, full_range)
    return y_small, l_small


def _copy_frame(frame: av.VideoFrame, dtype: DTypeLike) -> av.VideoFrame:
    copy = av.VideoFrame(frame.width, frame.height, frame.format.name)
    for src, dst in zip(frame.planes, copy.planes):
        _Plane.of(dst, dtype).array[...] = _Plane.of(src, dtype).array
    for attr in ("colorspace", "color_range", "color_primaries", "color_trc"):
        setattr(copy, attr, getattr(frame, attr))
    return copy


def _downsample(y: torch.Tensor, shift_h: int, shift_w: int) -> torch.Tensor:
    """Integer code values (B, 1, H, W) -> float mean over each chroma sample's footprint.

    Odd sizes repeat the last row/column, as the chroma planes cover them.
    """
    if (shift_h, shift_w) == (0, 0):
        return y.float()
    kh, kw = 1 << shift_h, 1 << shift_w
    pad_h, pad_w = (-y.shape[-2]) % kh, (-y.shape[-1]) % kw
    if y.dtype != torch.uint8:
        y = y.to(torch.int16)  # 10-bit codes come as uint16, which torch adds to nothing else
    if pad_h:
        y = torch.cat((y, y[..., -1:, :]), dim=-2)
    if pad_w:
        y = torch.cat((y, y[..., :, -1:]), dim=-1)
    # rows first, then columns: only a 1/kh share of the plane is widened to int16
    # (which holds four 10-bit values), twice as fast at 1080p as summing each offset
    rows = y[..., 0::kh, :].to(torch.int16, copy=True)
    for dy in range(1, kh):
        rows += y[..., dy::kh, :]
    total = rows[..., 0::kw]
    for dx in range(1, kw):
        total = total + rows[..., dx::kw]
    return total.float().mul_(1.0 / (kh * kw))


@torch.inference_mode()
def colorize_rgb(model: Network, rgb: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A still image: RGB (3, H, W) in [0, 1] -> colorized RGB with the same Lab lightness."""
    lab = rgb_to_lab(rgb.to(device).unsqueeze(0).float())
    lightness = lab[:, :1]
    height, width = lightness.shape[-2:]
    in_h, in_w = model.inference_size(height, width)
    l_small = F.interpolate(lightness, size=(in_h, in_w), mode="bilinear", antialias=True, align_corners=False)
    model_in = l_small.contiguous(memory_format=torch.channels_last).to(model.input_dtype)
    ab_low = model(model_in).float()
    l_low = F.interpolate(l_small, size=ab_low.shape[-2:], mode="area")
    ab = guided_upsample(ab_low, l_low / 100.0, lightness / 100.0)
    return lab_to_rgb(torch.cat((lightness, ab), dim=1))[0]
