"""Carrying a colorist's keyframe colors through its shot.

A keyframe is a color image of one frame of the film (painted by hand, or
colorized by a slow, strong model). Its ab replaces the automatic colors at
that frame and is then moved along the optical flow, frame after frame, until
the shot ends (a scene cut) or another keyframe takes over. Each pixel carries
a trust in 0..1 with its color:

- at the keyframe, how well the keyframe's lightness maps onto the frame's
  (flow from the keyframe to the frame, then the same warp check the motion
  smoother uses, with a wider tolerance since painting changes lightness a
  little): a keyframe of another shot, or of another framing, gets little
  trust, and the automatic colors stay;
- at each later frame, the trust is carried along with the color and lowered
  where the warp from the previous frame does not hold (occlusions, new
  objects, failed flow): those pixels take the automatic colors from then on.

The same goes backwards: :class:`KeyframeLookahead` reads ahead of the
colorizer to the next keyframe of the shot and carries its colors back to the
frames before it, so a frame between two keyframes takes both (weighted by
trust and by distance: the nearer keyframe counts more), and the frames of a
shot before its first keyframe take that one's.

The output is ``automatic + trust * (carried - automatic)``. Everything works at
the model's output resolution (about 64 x 112), as the smoothers do.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from colorvid.color import picture_lab
from colorvid.flow import estimate_flow, inside, warp
from colorvid.smoothing import WARP_TOLERANCE, detect_cuts, warp_confidence

# How far (L units, after removing the mean difference) the keyframe's lightness may be from the
# frame's where its colors are trusted: painting a frame shifts its lightness a little.
KEY_TOLERANCE = 8.0
# How well a keyframe's pixels match the frame on average (0..1): at KEY_MATCH and above it is a
# picture of this frame; at KEY_CHANCE and below, of something else (two unrelated pictures of
# similar texture match that well by chance), and none of its colors are taken; between, its
# trust is scaled down in proportion.
KEY_MATCH = 0.7
KEY_CHANCE = 0.3
# A warp confidence (smoothing.warp_confidence, 0..1) at or above this keeps a carried color's trust
# for that frame step; below it the trust falls in proportion. A well-tracked pixel has about 0.8
# per step (sensor noise and grain), which must not wear the keyframe's colors away within a shot.
STEP_CONFIDENCE = 0.5
# The keyframe's colors by place and lightness (a bilateral grid), for what the flow loses: cells of
# GRID_CELL pixels of the model's output and GRID_BINS lightness bins; a pixel the carried colors no
# longer cover takes the colors the keyframe has near it at its lightness.
GRID_CELL = 8
GRID_BINS = 12
# The grid's colors are used while at least this share of the keyframe's trust is still carried
# (fully), less below (in proportion): the picture has become another one.
SCENE_KEPT = 0.5
# How far back (frames) a keyframe's colors are carried towards the start of its shot: what the
# lookahead reads ahead of the colorizer, keeping each frame's small L (about 30 kB).
BACKWARD_MAX = 1440
LOOKAHEAD_BATCH = 16  # frames the lookahead reads, and carries back, at a time


def keyframe_lab(rgb: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """A keyframe image (3, H, W) RGB in 0..1 -> (ab (1, 2, h, w), lightness (1, 1, h, w)) at ``size``
    (see :func:`colorvid.color.picture_lab`)."""
    small = F.interpolate(rgb.float().unsqueeze(0), size=size, mode="bilinear", antialias=True, align_corners=False)
    return picture_lab(small.clamp(0, 1))


class ColorGrid:
    """A keyframe's mean ab per (lightness bin, grid cell), blurred over neighboring cells and bins."""

    def __init__(self, ab: torch.Tensor, lightness: torch.Tensor, weight: torch.Tensor | None = None):
        """ab (1, 2, h, w), L (1, 1, h, w) of the keyframe; ``weight`` (1, 1, h, w): how much each pixel counts."""
        h, w = lightness.shape[-2:]
        self.mean_lightness = lightness.mean()
        self.cells = (max(1, -(-h // GRID_CELL)), max(1, -(-w // GRID_CELL)))
        bins = _bins(lightness)
        weight = torch.ones_like(lightness) if weight is None else weight
        kernel = torch.ones(1, 1, 3, 3, 3, device=ab.device) / 27.0

        def blurred(values: torch.Tensor) -> torch.Tensor:  # (C, bins, ch, cw), blurred over cells and bins
            return F.conv3d(self._splat(values, bins).unsqueeze(1), kernel, padding=1).squeeze(1)

        count = blurred(torch.ones_like(lightness))  # (1, bins, ch, cw): the share of pixels in each bin and cell
        mass = blurred(weight)
        self.mean = blurred(ab * weight) / mass.clamp(min=1e-6)  # (2, bins, ch, cw)
        # how much to believe a cell's colors: the trust of the keyframe pixels behind them, and
        # whether there are enough of them
        self.mass = mass / count.clamp(min=1e-6) * (count * GRID_BINS * 4.0).clamp(max=1.0)

    def _splat(self, values: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
        """Sum of values (1, C, h, w) per (bin, cell) -> (C, GRID_BINS, ch, cw)."""
        pooled = []
        for b in range(GRID_BINS):
            inside_bin = (bins == b).to(values.dtype)
            pooled.append(F.adaptive_avg_pool2d(values * inside_bin, self.cells))
        return torch.stack(pooled, dim=2)[0]

    def colors(self, lightness: torch.Tensor, shift: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(ab (1, 2, h, w), confidence (1, 1, h, w) in 0..1) for a frame's L at the keyframe's size.

        ``shift`` (2,) is where the picture was in the keyframe, relative to now (x, y in
        pixels: the camera's motion since), so a pan does not leave the keyframe's colors
        behind. The frame's lightness is shifted by its mean difference from the keyframe's,
        so that old film's flicker (the whole picture lighter or darker) does not change the bins.
        """
        bins = _bins(lightness - (lightness.mean() - self.mean_lightness))[0, 0]  # (h, w)
        h, w = bins.shape
        mean = F.interpolate(self.mean, size=(h, w), mode="bilinear", align_corners=False)  # (2, bins, h, w)
        mass = F.interpolate(self.mass, size=(h, w), mode="bilinear", align_corners=False)  # (1, bins, h, w)
        motion = shift.view(1, 2, 1, 1).expand(1, 2, h, w)
        mean = warp(mean, motion.expand(2, 2, h, w))
        mass = warp(mass, motion)[0] * inside(motion)[0]  # (bins, h, w): nothing known from outside the keyframe
        index = bins.unsqueeze(0)
        ab = torch.stack([mean[c].gather(0, index)[0] for c in range(2)]).unsqueeze(0)
        confidence = mass.gather(0, index).clamp(0.0, 1.0).unsqueeze(0)
        return ab, confidence


def _bins(lightness: torch.Tensor) -> torch.Tensor:
    return (lightness / 100.0 * GRID_BINS).long().clamp_(0, GRID_BINS - 1)


@dataclass
class Carried:
    """One keyframe's colors at a frame: ab (1, 2, h, w), trust (1, 1, h, w) in 0..1 (1: take ab), and
    how many frames the frame is from the keyframe."""

    ab: torch.Tensor
    trust: torch.Tensor
    distance: int


class _Carrier:
    """One keyframe's colors moved along the flow, frame after frame, in one direction."""

    def __init__(self, ab: torch.Tensor, lightness: torch.Tensor, trust: torch.Tensor):
        self.key_ab = ab
        self.ab = ab
        # where each pixel was in the keyframe (an offset in pixels, as a flow): the colors are
        # sampled from the keyframe once, not resampled at every step, which would blur them away
        self.position = torch.zeros(1, 2, *ab.shape[-2:], device=ab.device, dtype=ab.dtype)
        self.trust = trust
        self.grid = ColorGrid(ab, lightness, trust)  # the keyframe's colors by place and lightness
        self.key_trust = trust.mean().clamp(min=1e-3)
        self.shift = torch.zeros(2, device=ab.device)  # the camera's motion since the keyframe (x, y pixels)
        self.distance = 0

    @classmethod
    def from_image(cls, image: torch.Tensor, lightness: torch.Tensor, tolerance: float) -> _Carrier:
        """A colorist's keyframe (RGB (3, H, W) in 0..1) of the frame whose L is ``lightness`` (1, 1, h, w)."""
        key_ab, key_l = keyframe_lab(image.to(lightness.device), (lightness.shape[-2], lightness.shape[-1]))
        # A keyframe is a picture of this very frame: compared in place, not searched for with the
        # flow, which would also find a fit for a picture of something else.
        match = warp_confidence(key_l, lightness, torch.zeros(1, 2, *lightness.shape[-2:], device=lightness.device),
                                tolerance)
        trust = match * ((match.mean() - KEY_CHANCE) / (KEY_MATCH - KEY_CHANCE)).clamp(0.0, 1.0)
        return cls(key_ab, lightness, trust)

    def step(self, motion: torch.Tensor, confidence: torch.Tensor) -> None:
        """Move on by one frame: ``motion`` (1, 2, h, w) from the new frame into the last one, and how
        far each carried color keeps its trust over that step (1, 1, h, w)."""
        self.position = warp(self.position, motion) + motion
        self.ab = warp(self.key_ab, self.position)
        self.trust = warp(self.trust, motion) * confidence
        self.shift = self.shift + motion.flatten(2).median(dim=2).values[0]
        self.distance += 1

    def colors(self, lightness: torch.Tensor) -> Carried:
        """The carried colors at the current frame (L (1, 1, h, w)), where the flow lost them filled in
        from the keyframe's colors at that place and lightness."""
        fill, found = self.grid.colors(lightness, self.shift)
        # ... while the shot still holds the keyframe's scene: when most of the carried trust is
        # gone at once (a cut the detector missed, a dissolve), so is the grid's
        still_there = (self.trust.mean() / self.key_trust / SCENE_KEPT).clamp(max=1.0)
        filled = (1 - self.trust) * found * still_there
        trust = self.trust + filled
        ab = (self.trust * self.ab + filled * fill) / trust.clamp(min=1e-6)
        return Carried(ab, trust, self.distance)


@dataclass
class Ahead:
    """What the lookahead tells of a frame: the next keyframe's colors carried back to it, and, where
    the key model takes the frame as a keyframe, that model's ab (1, 2, h, w) of it."""

    carried: Carried | None = None
    model_key: torch.Tensor | None = None


def combine(ahead: Carried | None, behind: Carried | None) -> Carried | None:
    """The colors of the keyframes before (``behind``) and after (``ahead``) a frame, together.

    Each keyframe's colors are weighted by their trust and by the other keyframe's distance
    (the nearer keyframe counts more); the trust is that of either.
    """
    if ahead is None or behind is None:
        return ahead if behind is None else behind
    total = ahead.distance + behind.distance
    weight_behind = behind.trust * (ahead.distance / total)
    weight_ahead = ahead.trust * (behind.distance / total)
    ab = (weight_behind * behind.ab + weight_ahead * ahead.ab) / (weight_behind + weight_ahead).clamp(min=1e-6)
    trust = 1 - (1 - behind.trust) * (1 - ahead.trust)
    return Carried(ab, trust, min(ahead.distance, behind.distance))


def _step_confidence(prev_l: torch.Tensor, cur_l: torch.Tensor, flow: torch.Tensor, tolerance: float
                     ) -> torch.Tensor:
    return (warp_confidence(prev_l, cur_l, flow, tolerance) / STEP_CONFIDENCE).clamp_(max=1.0)


class KeyframeGuide:
    """Keyframe colors carried through their shots, for one video's frames in presentation order."""

    def __init__(self, key_tolerance: float = KEY_TOLERANCE, step_tolerance: float = WARP_TOLERANCE):
        self.key_tolerance = key_tolerance
        self.step_tolerance = step_tolerance
        self._carrier: _Carrier | None = None  # the last keyframe's colors, carried forwards
        self._previous: torch.Tensor | None = None  # the last frame's L (1, 1, h, w)

    def __call__(
        self,
        ab: torch.Tensor,
        lightness: torch.Tensor,
        cuts: torch.Tensor,
        keys: Mapping[int, torch.Tensor],
        model_keys: Mapping[int, torch.Tensor] | None = None,
        ahead: Sequence[Carried | None] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch's automatic ab (B, 2, h, w) and L (B, 1, h, w), its cut flags (B,) and its keyframes
        (batch index -> RGB (3, H, W) in 0..1) -> (the guided ab, bool (B,): which frames took
        keyframe colors).

        ``model_keys`` (batch index -> ab (1, 2, h, w)) are keyframe colors another model
        predicted for that very frame: fully trusted there, carried as a keyframe's.
        ``ahead`` holds, per frame, the colors of the next keyframe of its shot carried
        backwards to it (:class:`KeyframeLookahead`), or None.
        """
        model_keys = model_keys or {}
        ahead = ahead or [None] * ab.shape[0]
        previous = self._previous
        self._previous = lightness[-1:].clone()
        if previous is not None and previous.shape[1:] != lightness.shape[1:]:
            previous, self._carrier = None, None
        keyed = torch.zeros(ab.shape[0], dtype=torch.bool)
        if self._carrier is None and not keys and not model_keys and not any(ahead):
            return ab, keyed
        prev_l = torch.cat((lightness[:1] if previous is None else previous, lightness[:-1]))
        flow = estimate_flow(prev_l, lightness)
        step = _step_confidence(prev_l, lightness, flow, self.step_tolerance)
        out = ab.clone()
        for i in range(ab.shape[0]):
            frame_l = lightness[i : i + 1]
            if i in keys:  # a colorist's keyframe comes first
                self._carrier = _Carrier.from_image(keys[i], frame_l, self.key_tolerance)
            elif i in model_keys:
                key_ab = model_keys[i].to(ab.device, ab.dtype)
                self._carrier = _Carrier(key_ab, frame_l, torch.ones_like(frame_l, dtype=ab.dtype))
            elif bool(cuts[i]):
                self._carrier = None
            elif self._carrier is not None:
                self._carrier.step(flow[i : i + 1], step[i : i + 1])
            behind = self._carrier.colors(frame_l) if self._carrier is not None else None
            carried = combine(ahead[i], behind)
            if carried is not None:
                out[i] = torch.lerp(ab[i : i + 1], carried.ab.to(ab.dtype), carried.trust.to(ab.dtype))[0]
                keyed[i] = True
        return out, keyed


class KeyframeLookahead:
    """The next keyframe of each frame's shot, carried backwards to the frame.

    It reads a second pass over the same frames ahead of the colorizer: from a
    frame up to the next keyframe, scene cut or end (at most BACKWARD_MAX
    frames), keeping only their small L; at a keyframe, its colors go back
    along the flow over the frames read, as :class:`KeyframeGuide` carries
    them forwards. A frame with no keyframe ahead in its shot gets nothing.
    Keyframes are the colorist's images that come with the frames, and the
    frames that ``model_key`` colors (the key model's: each shot's first
    frame, and more in long shots), whose colors it hands on to the guide.
    """

    def __init__(
        self,
        frames: Iterable[tuple[Any, torch.Tensor | None]],
        lightness: Callable[[list, tuple[int, int]], torch.Tensor],
        model_key: Callable[[Any, bool, bool, tuple[int, int]], torch.Tensor | None] | None = None,
        key_tolerance: float = KEY_TOLERANCE,
        step_tolerance: float = WARP_TOLERANCE,
        max_frames: int | None = None,
    ):
        """``frames`` yields each frame with its keyframe image (RGB (3, H, W) in 0..1) or None, in
        the order the colorizer gets them; ``lightness(frames, size)`` is the colorizer's L of a
        batch of them at its output size (the frames' cut flags are found from it, as its are);
        ``model_key(frame, cut, painted, size)`` is called for every frame in order (whether it
        starts a shot, whether it has an image) and gives the key model's ab where that frame is
        one of its keyframes, else None."""
        self._frames = iter(frames)
        self._lightness = lightness
        self._model_key = model_key
        self.key_tolerance = key_tolerance
        self.step_tolerance = step_tolerance
        self.max_frames = BACKWARD_MAX if max_frames is None else max_frames
        # read, not yet in a span: (L, cut, keyframe image, key model's ab)
        self._read: deque[tuple[torch.Tensor, bool, torch.Tensor | None, torch.Tensor | None]] = deque()
        self._span: list[torch.Tensor] = []  # L of the frames since the last keyframe or cut
        self._ready: deque[Ahead] = deque()  # decided, in order, not yet taken
        self._previous: torch.Tensor | None = None

    def take(self, count: int, size: tuple[int, int]) -> list[Ahead]:
        """What comes from keyframes ahead for the next ``count`` frames, at ``size`` (the guide's L size)."""
        while len(self._ready) < count:
            self._advance(size)
        return [self._ready.popleft() for _ in range(count)]

    def _advance(self, size: tuple[int, int]) -> None:
        """Decide at least one more frame."""
        if not self._read and not self._read_batch(size):
            self._ready.extend(Ahead() for _ in range(len(self._span) or 1))  # past the end: nothing ahead
            self._span = []
            return
        lightness, cut, image, model_ab = self._read.popleft()
        if cut and self._span:  # the shot ended before any keyframe
            self._ready.extend(Ahead() for _ in self._span)
            self._span = []
        if image is None and model_ab is None:
            self._span.append(lightness)
            if len(self._span) > self.max_frames:  # too far from any keyframe ahead
                self._span.pop(0)
                self._ready.append(Ahead())
            return
        if image is not None:
            carrier = _Carrier.from_image(image, lightness, self.key_tolerance)
        else:
            assert model_ab is not None
            carrier = _Carrier(model_ab, lightness, torch.ones_like(lightness))
        self._ready.extend(Ahead(carried) for carried in self._carry_back(carrier, lightness))
        self._ready.append(Ahead(model_key=model_ab))  # its own colors go forwards from there
        self._span = []

    def _read_batch(self, size: tuple[int, int]) -> bool:
        batch = list(itertools.islice(self._frames, LOOKAHEAD_BATCH))
        if not batch:
            return False
        lightness = self._lightness([frame for frame, _ in batch], size)
        if self._previous is not None and self._previous.shape[1:] != lightness.shape[1:]:
            self._previous = None
        cuts = detect_cuts(lightness, self._previous)
        self._previous = lightness[-1:].clone()
        for i, (frame, image) in enumerate(batch):
            cut = bool(cuts[i])
            model_ab = None if self._model_key is None else self._model_key(frame, cut, image is not None, size)
            self._read.append((lightness[i : i + 1], cut, image, model_ab))
        return True

    def _carry_back(self, carrier: _Carrier, key_l: torch.Tensor) -> list[Carried]:
        """The keyframe's colors at each frame of the span before it, in presentation order."""
        span = self._span
        if not span:
            return []
        later = torch.cat((*span[1:], key_l))  # frame j + 1 of each frame j of the span
        earlier = torch.cat(span)
        carried: list[Carried] = []
        for end in range(len(span), 0, -LOOKAHEAD_BATCH):
            start = max(0, end - LOOKAHEAD_BATCH)
            flow = estimate_flow(later[start:end], earlier[start:end])
            step = _step_confidence(later[start:end], earlier[start:end], flow, self.step_tolerance)
            for j in range(end - start - 1, -1, -1):
                carrier.step(flow[j : j + 1], step[j : j + 1])
                colors = carrier.colors(earlier[start + j : start + j + 1])
                carried.append(Carried(colors.ab.half(), colors.trust.half(), colors.distance))
        carried.reverse()
        return carried
