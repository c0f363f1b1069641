"""Probing: what colorvid needs to know about a file's first video stream (:class:`VideoInfo`),
its time span (:func:`timeline`), and the shared helpers for opening an input."""

from __future__ import annotations

import logging
import math
import os
import struct
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from typing import cast

import av
import av.container
import av.error
import av.stream
from av.sidedata.sidedata import SideDataContainer
from av.sidedata.sidedata import Type as SideDataType

from colorvid.color import sws_color_range, sws_colorspace
from colorvid.errors import InputError

log = logging.getLogger(__name__)

# --- probing ---------------------------------------------------------------

# AVColorSpace values -> the Y'CbCr matrix name used across colorvid.
MATRIX_OF_COLORSPACE = {1: "bt709", 5: "bt601", 6: "bt601", 9: "bt2020", 10: "bt2020"}
COLOR_UNSPECIFIED = 2  # AVCOL_PRI/TRC/SPC_UNSPECIFIED
RANGE_UNSPECIFIED, RANGE_LIMITED, RANGE_FULL = 0, 1, 2

# Container and stream tags that describe the old file rather than the content:
# the muxer rewrites them, or they would be stale (Matroska statistics).
_STALE_TAGS = {
    "major_brand", "minor_version", "compatible_brands", "encoder", "duration",
    "bps", "number_of_frames", "number_of_bytes", "vendor_id", "rotate", "alpha_mode",
}


@dataclass(frozen=True)
class VideoInfo:
    """What colorvid needs to know about the first video stream of a file.

    ``rotation`` is the clockwise angle (0, 90, 180, 270) a player turns the
    picture by for display, as in the old ``rotate`` tag; ``display_matrix``
    is the raw FFmpeg display matrix when the file has one (it may also hold
    a flip), and is written back as is.

    ``matrix`` and ``full_range`` say how Y'CbCr relates to RGB; an untagged
    file gets bt709 from 720 lines up and bt601 below. The ``color_*`` and
    ``colorspace`` values are FFmpeg's raw enum values, copied to the output.
    """

    path: str
    width: int
    height: int
    time_base: Fraction
    frame_rate: Fraction | None  # average rate; None when unknown
    frame_count: int | None  # from the header; None when unknown
    duration: float | None  # seconds; None when unknown
    start_time: float  # seconds, pts of the first frame times time_base
    pix_fmt: str
    bit_depth: int
    matrix: str  # "bt601", "bt709" or "bt2020"
    full_range: bool
    color_primaries: int
    color_trc: int
    colorspace: int
    color_range: int
    rotation: int = 0
    display_matrix: tuple[int, ...] | None = None
    container_metadata: dict[str, str] = field(default_factory=dict)
    stream_metadata: dict[str, str] = field(default_factory=dict)

    @property
    def sws_colorspace(self) -> str:
        """``src_colorspace``/``dst_colorspace`` for ``VideoFrame.reformat``."""
        return sws_colorspace(self.matrix)

    @property
    def sws_color_range(self) -> str:
        """``src_color_range``/``dst_color_range`` for ``VideoFrame.reformat``."""
        return sws_color_range(self.full_range)

    def to_dict(self) -> dict:
        """A JSON-serializable form (fractions as "num/den" strings)."""
        data = asdict(self)
        data["time_base"] = str(self.time_base)
        data["frame_rate"] = None if self.frame_rate is None else str(self.frame_rate)
        data["display_matrix"] = None if self.display_matrix is None else list(self.display_matrix)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> VideoInfo:
        values = dict(data)
        values["time_base"] = Fraction(values["time_base"])
        if values.get("frame_rate") is not None:
            values["frame_rate"] = Fraction(values["frame_rate"])
        if values.get("display_matrix") is not None:
            values["display_matrix"] = tuple(values["display_matrix"])
        return cls(**values)


def probe(path: str | os.PathLike) -> VideoInfo:
    """Describe the first video stream of ``path``.

    Decodes at most the first frame (to read rotation and color tags that
    only the decoder knows). A file whose header gives the size and pixel
    format probes even if its frames cannot be decoded; :class:`VideoReader`
    reports that.

    Raises:
        InputError: missing file, not a media file, no video stream, or
            nothing decodable to learn the picture size from.
    """
    path = os.fspath(path)
    with open_input(path) as container:
        stream = video_stream(container, path)
        ctx = stream.codec_context
        first = _first_frame(container, stream)

        pix_fmt = ctx.pix_fmt or (first.format.name if first else None)
        width = ctx.width or (first.width if first else 0)
        height = ctx.height or (first.height if first else 0)
        if not pix_fmt or not width or not height:  # only a decoded frame would tell
            raise InputError(f"{path}: no video frame could be decoded")

        def tag(name: str, unspecified: int) -> int:
            value = int(getattr(ctx, name))
            if value == unspecified and first is not None:
                value = int(getattr(first, name))
            return value

        primaries = tag("color_primaries", COLOR_UNSPECIFIED)
        trc = tag("color_trc", COLOR_UNSPECIFIED)
        colorspace = tag("colorspace", COLOR_UNSPECIFIED)
        color_range = tag("color_range", RANGE_UNSPECIFIED)
        matrix = MATRIX_OF_COLORSPACE.get(colorspace) or ("bt709" if height >= 720 else "bt601")

        assert stream.time_base is not None, "FFmpeg gives every demuxed stream a time base"
        time_base = Fraction(stream.time_base)
        if stream.duration:
            duration = float(stream.duration * time_base)
        elif container.duration:
            duration = container.duration / av.time_base
        else:
            duration = None

        display_matrix = _display_matrix(first)
        if first is not None and display_matrix is not None:  # the matrix comes from the first frame
            rotation = -first.rotation % 360
        else:
            rotation = _rotate_tag(stream.metadata)

        return VideoInfo(
            path=path,
            width=width,
            height=height,
            time_base=time_base,
            frame_rate=stream.average_rate or stream.guessed_rate or None,
            frame_count=stream.frames or None,
            duration=duration,
            start_time=float(stream.start_time * time_base) if stream.start_time is not None else 0.0,
            pix_fmt=pix_fmt,
            bit_depth=av.VideoFormat(pix_fmt).components[0].bits,
            matrix=matrix,
            full_range=color_range == RANGE_FULL or pix_fmt.startswith("yuvj"),
            color_primaries=primaries,
            color_trc=trc,
            colorspace=colorspace,
            color_range=color_range,
            rotation=rotation,
            display_matrix=display_matrix,
            container_metadata=kept_tags(container.metadata),
            stream_metadata=kept_tags(stream.metadata),
        )


def timeline(path: str | os.PathLike) -> tuple[int, int, Fraction]:
    """(start, end, time_base) of the first video stream: its timestamps span [start, end).

    From the header where it tells; otherwise (WebM without cues) from a
    pass over the packets, without decoding. A stream without timestamps
    (raw H.264) gets the ones :class:`VideoReader` gives its frames: one
    frame duration apart from 0. The same file always gives the same answer,
    so runs on different machines agree on where the parts of a film begin.

    Raises:
        InputError: the file cannot be read.
    """
    path = os.fspath(path)
    with open_input(path) as container:
        stream = video_stream(container, path)
        assert stream.time_base is not None, "FFmpeg gives every demuxed stream a time base"
        time_base = Fraction(stream.time_base)
        start = stream.start_time
        if start is not None and stream.duration:
            return start, start + stream.duration, time_base
        if start is not None and container.duration and container.start_time is not None:
            end_us = Fraction(container.start_time + container.duration, av.time_base)
            return start, math.ceil(end_us / time_base), time_base
        first = last = None
        packets = 0
        try:
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                packets += 1
                at = packet.pts if packet.pts is not None else packet.dts
                if at is None:
                    continue
                first = at if first is None else min(first, at)
                last = max(last if last is not None else at, at + (packet.duration or 0))
        except av.error.FFmpegError:
            pass  # a damaged tail: the span up to it
        # No timestamps at all (first and last are set together): as VideoReader numbers the frames.
        if first is None or last is None:
            return 0, max(1, packets * missing_pts_step(stream)), time_base
    return (start if start is not None else first), max(last, first + 1), time_base


def count_packets(path: str | os.PathLike) -> int:
    """The number of packets of the first video stream (about its frame count), found without decoding.

    Raises:
        InputError: the file cannot be read.
    """
    path = os.fspath(path)
    with open_input(path) as container:
        return sum(1 for packet in container.demux(video_stream(container, path)) if packet.size)


def missing_pts_step(stream: av.VideoStream) -> int:
    """The pts step VideoReader gives frames that have no timestamp: one frame duration."""
    rate = stream.average_rate or stream.guessed_rate
    time_base = stream.time_base
    return max(1, round(1 / (rate * time_base))) if rate and time_base else 1


def open_input(path: str) -> av.container.InputContainer:
    if not os.path.exists(path):
        raise InputError(f"{path}: no such file")
    if os.path.isdir(path):
        raise InputError(f"{path}: is a folder, not a video file")
    try:
        return av.open(path)
    except PermissionError:
        raise InputError(f"{path}: permission denied") from None
    except (av.error.FFmpegError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a readable media file ({ffmpeg_reason(exc)})") from None


def video_stream(container: av.container.InputContainer, path: str) -> av.VideoStream:
    """The first real video stream: cover art (attached pictures) does not count."""
    for stream in container.streams.video:
        if not is_cover_art(stream):
            return stream
    kinds = sorted({s.type for s in container.streams})
    found = f"only {', '.join(kinds)}" if kinds else "no streams"
    raise InputError(f"{path}: no video stream ({found})")


def is_cover_art(stream: av.stream.Stream) -> bool:
    return bool(stream.disposition & av.stream.Disposition.attached_pic)


def _first_frame(container: av.container.InputContainer, stream: av.VideoStream) -> av.VideoFrame | None:
    try:
        for packet in container.demux(stream):
            try:
                for frame in packet.decode():
                    return frame
            except av.error.FFmpegError:
                continue
    except av.error.FFmpegError:
        pass
    return None


def _display_matrix(frame: av.VideoFrame | None) -> tuple[int, ...] | None:
    if frame is None:
        return None
    # PyAV's stub types Frame.side_data as a TypedDict; it is a SideDataContainer keyed by side data type.
    side_data = cast(SideDataContainer, frame.side_data).get(SideDataType.DISPLAYMATRIX)
    if side_data is None:
        return None
    return struct.unpack("<9i", bytes(side_data))


def _rotate_tag(metadata) -> int:
    try:
        return round(float(metadata.get("rotate", 0))) % 360
    except ValueError:
        return 0


def kept_tags(metadata) -> dict[str, str]:
    return {
        key: value
        for key, value in metadata.items()
        if key.lower() not in _STALE_TAGS and not key.startswith("_STATISTICS")
    }


def ffmpeg_reason(exc: BaseException) -> str:
    """FFmpeg's error text without the file name PyAV appends to it."""
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def pts_seconds(pts: int | None, time_base) -> float | None:
    return None if pts is None or not time_base else float(pts * time_base)


# --- reading ---------------------------------------------------------------
