"""Contact sheets: a few frames of a video, as the model sees them and colorized.

``make_preview`` picks N evenly spaced frames (the middle of N equal parts of
the video), colorizes them, and writes one image: a row of the gray input
(the luma, which is all the colorizer reads), a row of the colorized frames,
and optionally a row of the input's own colors. Only the frames needed are
decoded: the reader seeks near each one and decodes forward to it. Files
without a duration, or that cannot seek, are read from the start instead.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np

from colorvid import atomic
from colorvid.color import luma_to_gray
from colorvid.errors import InputError, OutputError, SeekError
from colorvid.io.formats import IMAGE_SUFFIXES
from colorvid.io.reader import frame_pts, frame_time
from colorvid.pipeline import ColorizeOptions, check_output_image

log = logging.getLogger("colorvid")

MAX_SHEET_WIDTH = 2000  # pixels; frames are scaled down to fit
GAP = 4  # pixels between and around the frames
BACKGROUND = (24, 24, 24)
# A target less than this far ahead of the last decoded frame is decoded to rather than sought:
# a seek goes back to the previous keyframe, which may be further back than that.
SEEK_AHEAD_SECONDS = 2.0


@dataclass(frozen=True)
class PreviewOptions:
    frames: int = 6
    truth: bool = False  # third row: the input's own colors
    overwrite: bool = False
    max_width: int = MAX_SHEET_WIDTH
    colorize: ColorizeOptions = field(default_factory=ColorizeOptions)


@dataclass
class Sheet:
    path: Path
    width: int
    height: int
    rows: int
    times: list[float]  # seconds from the start of the video of each frame shown


def make_preview(source: str | os.PathLike, target: str | os.PathLike, options: PreviewOptions = PreviewOptions()
                 ) -> Sheet:
    """Write the contact sheet of ``source`` to ``target`` (atomically) and describe it.

    Raises:
        InputError: the video cannot be read.
        OutputError: the sheet cannot be written (exists without ``overwrite``, bad extension, ...).
        WeightsError: the model cannot be loaded.
    """
    from colorvid.color import work_format
    from colorvid.io import probe
    from colorvid.pipeline import load_for

    source, target = Path(source), Path(target)
    if target.suffix.lower() not in IMAGE_SUFFIXES:
        raise OutputError(f"{target}: a contact sheet is an image; use one of {', '.join(sorted(IMAGE_SUFFIXES))}")
    if not target.parent.is_dir():
        raise OutputError(f"{target}: folder {target.parent} does not exist")
    check_output_image(source, target, options.overwrite)
    if source.suffix.lower() in IMAGE_SUFFIXES:
        raise InputError(f"{source}: is an image; preview takes a video (use 'colorvid colorize' for images)")
    info = probe(source)
    frames = pick_frames(source, info, options.frames)

    colorizer = load_for(options.colorize).frame_colorizer(info.matrix, info.full_range, smoothing=False)
    colorized = colorizer.colorize_frames(frames, work_format(info.pix_fmt, info.bit_depth))

    def rgb(frame: av.VideoFrame) -> np.ndarray:
        return frame.reformat(
            format="rgb24", src_colorspace=info.sws_colorspace, src_color_range=info.sws_color_range
        ).to_ndarray()

    rows = [
        [_gray(frame, info.full_range) for frame in colorized],
        [rgb(frame) for frame in colorized],
    ]
    if options.truth:
        rows.append([rgb(frame) for frame in frames])
    rows = [[_rotated(tile, info.rotation) for tile in row] for row in rows]
    sheet = _assemble(rows, options.max_width)
    _save_atomic(sheet, target)
    times = [float(frame_time(f)) - info.start_time for f in frames]
    return Sheet(target, sheet.shape[1], sheet.shape[0], len(rows), times)


# --- choosing frames ---------------------------------------------------------------------


def pick_frames(path: Path, info, count: int) -> list[av.VideoFrame]:
    """About ``count`` frames at the middles of ``count`` equal parts of the video (fewer if it is shorter)."""
    if info.duration and info.duration > 0:
        targets = [info.start_time + (k + 0.5) * info.duration / count for k in range(count)]
        try:
            frames = _seek_frames(path, targets)
        except InputError as exc:  # a SeekError, or a seek that found no frame
            log.debug("%s: reading from the start (%s)", path, exc)
        else:
            return _unique(frames)
    return _scan_frames(path, count, info.frame_count)


def _seek_frames(path: Path, targets: list[float]) -> list[av.VideoFrame]:
    """The frame showing at each target time (seconds, in the stream's timeline; ascending).

    That is the last frame starting at or before the target, as a player
    would show it (the first frame, for a target before the start).
    """
    from colorvid.io import VideoReader

    picked = []
    with VideoReader(path) as reader:
        time_base = reader.time_base
        decoded = None  # frames decoded since the last seek; None: seek
        pending = None  # a frame already decoded that starts after the previous target
        position = None  # start time of the last frame decoded
        for target in targets:
            just_sought = decoded is None or position is None or not 0 <= target - position <= SEEK_AHEAD_SECONDS
            if just_sought:
                decoded, pending = reader.frames_from(math.floor(target / time_base)), None
            assert decoded is not None, "set by the seek above, or kept from the previous target"
            chosen = None
            frames = itertools.chain([pending] if pending is not None else [], decoded)
            pending = None
            for frame in frames:
                if reader.frames_without_pts:
                    raise SeekError(f"{path}: frames without timestamps")
                position = float(frame_pts(frame) * time_base)
                if just_sought and chosen is None and position > target + SEEK_AHEAD_SECONDS:
                    raise SeekError(f"{path}: a seek to {target:.2f} s landed at {position:.2f} s")
                if position > target and chosen is not None:
                    pending = frame  # shown after this target: keep it for the next one
                    break
                chosen = frame
                if position >= target:
                    break
            else:
                decoded = None  # the decoder is drained: seek for the next target
            if chosen is None:
                raise SeekError(f"{path}: nothing decoded after a seek to {target:.2f} s")
            picked.append(chosen)
    return picked


def _scan_frames(path: Path, count: int, frame_count: int | None) -> list[av.VideoFrame]:
    """Sequential fallback: count the packets (cheap, nothing decoded), then decode up to the last pick."""
    from colorvid.io import VideoReader, count_packets

    frame_count = frame_count or count_packets(path)
    wanted = sorted({min(frame_count - 1, int((k + 0.5) * frame_count / count)) for k in range(count)})
    picked = []
    with VideoReader(path) as reader:
        for index, frame in enumerate(reader):
            if index == wanted[len(picked)]:
                picked.append(frame)
                if len(picked) == len(wanted):
                    break
    if not picked:
        raise InputError(f"{path}: no video frame could be decoded")
    return picked


def _unique(frames: list[av.VideoFrame]) -> list[av.VideoFrame]:
    seen, unique = set(), []
    for frame in frames:
        if frame.pts not in seen:
            seen.add(frame.pts)
            unique.append(frame)
    return unique


# --- drawing ---------------------------------------------------------------------------------


def _gray(frame: av.VideoFrame, full_range: bool) -> np.ndarray:
    """The Y' plane of a planar Y'CbCr frame as a gray RGB picture (uint8)."""
    plane = frame.planes[0]
    bits = frame.format.components[0].bits
    dtype = np.uint16 if bits > 8 else np.uint8
    # Through a memoryview: numpy's stubs for Python < 3.12 accept only built-in buffer types.
    y = np.frombuffer(memoryview(plane), dtype=dtype).reshape(plane.height, -1)[:, : plane.width].astype(np.float32)
    gray = (luma_to_gray(y, bits, full_range) * 255).round().clip(0, 255).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=2)


def _rotated(tile: np.ndarray, rotation: int) -> np.ndarray:
    """Turned clockwise by ``rotation`` degrees, as a player shows it."""
    return np.ascontiguousarray(np.rot90(tile, k=-(rotation // 90))) if rotation % 360 else tile


def tile_size(width: int, height: int, columns: int, max_width: int) -> tuple[int, int]:
    """Frame size on the sheet: as is, or scaled down so the sheet fits ``max_width``."""
    fit = (max_width - (columns + 1) * GAP) // columns
    if width <= fit:
        return width, height
    return max(1, fit), max(1, round(height * fit / width))


def _assemble(rows: list[list[np.ndarray]], max_width: int) -> np.ndarray:
    from PIL import Image

    columns = len(rows[0])
    height, width = rows[0][0].shape[:2]
    tile_w, tile_h = tile_size(width, height, columns, max_width)
    sheet = np.empty((len(rows) * (tile_h + GAP) + GAP, columns * (tile_w + GAP) + GAP, 3), np.uint8)
    sheet[:] = BACKGROUND
    for r, row in enumerate(rows):
        for c, tile in enumerate(row):
            if (tile_w, tile_h) != (width, height):
                tile = np.asarray(Image.fromarray(tile).resize((tile_w, tile_h), Image.Resampling.LANCZOS))
            top, left = GAP + r * (tile_h + GAP), GAP + c * (tile_w + GAP)
            sheet[top : top + tile_h, left : left + tile_w] = tile
    return sheet


def _save_atomic(sheet: np.ndarray, target: Path) -> None:
    from PIL import Image

    try:
        with atomic.atomic_path(target) as temp:
            Image.fromarray(sheet).save(temp)
    except OSError as exc:
        raise OutputError(f"{target}: cannot write ({exc.strerror or exc})") from None
