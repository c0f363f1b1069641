"""Reading and writing video with PyAV.

- :func:`probe` describes the first video stream of a file (:class:`VideoInfo`).
- :class:`VideoReader` decodes its frames, in presentation order, with their
  original ``pts`` and ``time_base``.
- :class:`VideoWriter` encodes frames into a temporary file next to the target
  and moves it into place only when everything succeeded. It keeps the
  input's timestamps (variable frame rate survives), colour tags, rotation and
  metadata, and carries the audio and subtitle streams of a source file over,
  copying packets where the container allows it and transcoding otherwise.
- :func:`check_output` validates an output path before any decoding work.

Timestamps are never recomputed from a frame rate: every frame keeps its pts.
"""

from __future__ import annotations

import errno
import io
import logging
import math
import os
import secrets
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from fractions import Fraction

import av
from av.sidedata.sidedata import Type as SideDataType

from colorvid.errors import InputError, OutputError

log = logging.getLogger(__name__)

# --- probing ---------------------------------------------------------------

# AVColorSpace values -> the Y'CbCr matrix name used across colorvid.
_MATRIX_OF_COLORSPACE = {1: "bt709", 5: "bt601", 6: "bt601", 9: "bt2020", 10: "bt2020"}
# Tags written for a matrix when the input had none: (primaries, transfer, colorspace).
_TAGS_OF_MATRIX = {"bt709": (1, 1, 1), "bt601": (6, 6, 6), "bt2020": (9, 14, 9)}
# Matrix name -> swscale colorspace name, for VideoFrame.reformat().
_SWS_COLORSPACE = {"bt601": "itu601", "bt709": "itu709", "bt2020": "bt2020"}
_UNSPECIFIED = 2  # AVCOL_PRI/TRC/SPC_UNSPECIFIED
_RANGE_UNSPECIFIED, _RANGE_LIMITED, _RANGE_FULL = 0, 1, 2

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
        return _SWS_COLORSPACE[self.matrix]

    @property
    def sws_color_range(self) -> str:
        """``src_color_range``/``dst_color_range`` for ``VideoFrame.reformat``."""
        return "JPEG" if self.full_range else "MPEG"

    def to_dict(self) -> dict:
        """A JSON-serialisable form (fractions as "num/den" strings)."""
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

    Decodes at most the first frame (to read rotation and colour tags that
    only the decoder knows). A file whose header gives the size and pixel
    format probes even if its frames cannot be decoded; :class:`VideoReader`
    reports that.

    Raises:
        InputError: missing file, not a media file, no video stream, or
            nothing decodable to learn the picture size from.
    """
    path = os.fspath(path)
    with _open_input(path) as container:
        stream = _video_stream(container, path)
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

        primaries = tag("color_primaries", _UNSPECIFIED)
        trc = tag("color_trc", _UNSPECIFIED)
        colorspace = tag("colorspace", _UNSPECIFIED)
        color_range = tag("color_range", _RANGE_UNSPECIFIED)
        matrix = _MATRIX_OF_COLORSPACE.get(colorspace) or ("bt709" if height >= 720 else "bt601")

        time_base = Fraction(stream.time_base)
        if stream.duration:
            duration = float(stream.duration * time_base)
        elif container.duration:
            duration = container.duration / av.time_base
        else:
            duration = None

        display_matrix = _display_matrix(first)
        if display_matrix is not None:
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
            full_range=color_range == _RANGE_FULL or pix_fmt.startswith("yuvj"),
            color_primaries=primaries,
            color_trc=trc,
            colorspace=colorspace,
            color_range=color_range,
            rotation=rotation,
            display_matrix=display_matrix,
            container_metadata=_kept_tags(container.metadata),
            stream_metadata=_kept_tags(stream.metadata),
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
    with _open_input(path) as container:
        stream = _video_stream(container, path)
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
        except av.FFmpegError:
            pass  # a damaged tail: the span up to it
        if first is None:  # no timestamps at all: as VideoReader numbers the frames
            return 0, max(1, packets * _missing_pts_step(stream)), time_base
    return (start if start is not None else first), max(last, first + 1), time_base


def _missing_pts_step(stream: av.VideoStream) -> int:
    """The pts step VideoReader gives frames that have no timestamp: one frame duration."""
    rate = stream.average_rate or stream.guessed_rate
    time_base = stream.time_base
    return max(1, round(1 / (rate * time_base))) if rate and time_base else 1


def _open_input(path: str) -> av.container.InputContainer:
    if not os.path.exists(path):
        raise InputError(f"{path}: no such file")
    if os.path.isdir(path):
        raise InputError(f"{path}: is a folder, not a video file")
    try:
        return av.open(path)
    except PermissionError:
        raise InputError(f"{path}: permission denied") from None
    except (av.FFmpegError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a readable media file ({_reason(exc)})") from None


def _video_stream(container: av.container.InputContainer, path: str) -> av.VideoStream:
    """The first real video stream: cover art (attached pictures) does not count."""
    for stream in container.streams.video:
        if not _is_cover_art(stream):
            return stream
    kinds = sorted({s.type for s in container.streams})
    found = f"only {', '.join(kinds)}" if kinds else "no streams"
    raise InputError(f"{path}: no video stream ({found})")


def _is_cover_art(stream: av.stream.Stream) -> bool:
    return bool(stream.disposition & av.stream.Disposition.attached_pic)


def _first_frame(container: av.container.InputContainer, stream: av.VideoStream) -> av.VideoFrame | None:
    try:
        for packet in container.demux(stream):
            try:
                for frame in packet.decode():
                    return frame
            except av.FFmpegError:
                continue
    except av.FFmpegError:
        pass
    return None


def _display_matrix(frame: av.VideoFrame | None) -> tuple[int, ...] | None:
    if frame is None:
        return None
    side_data = frame.side_data.get(SideDataType.DISPLAYMATRIX)
    if side_data is None:
        return None
    return struct.unpack("<9i", bytes(side_data))


def _rotate_tag(metadata) -> int:
    try:
        return round(float(metadata.get("rotate", 0))) % 360
    except ValueError:
        return 0


def _kept_tags(metadata) -> dict[str, str]:
    return {
        key: value
        for key, value in metadata.items()
        if key.lower() not in _STALE_TAGS and not key.startswith("_STATISTICS")
    }


def _reason(exc: BaseException) -> str:
    """FFmpeg's error text without the file name PyAV appends to it."""
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def _seconds(pts: int | None, time_base) -> float | None:
    return None if pts is None or not time_base else float(pts * time_base)


# --- reading ---------------------------------------------------------------


class VideoReader:
    """Decodes the first video stream of a file, frame by frame.

    Use as a context manager and iterate once::

        with VideoReader(path) as reader:
            for frame in reader:   # av.VideoFrame with .pts and .time_base
                ...

    Damaged packets are skipped with a warning naming their time; after
    ``max_consecutive_errors`` failures in a row the file is given up on. A
    truncated file yields what it can and warns. A file that yields no frame
    at all raises :class:`InputError` at the end of the iteration.

    ``seek_pts`` (in the stream's time base) starts decoding at the keyframe at
    or before that time instead of at the start; frames before it may still
    come out, and a file that cannot seek raises :class:`SeekError`.
    ``frames_without_pts`` counts frames that had no timestamp and were given
    one (such timestamps depend on where decoding started).
    """

    def __init__(self, path: str | os.PathLike, *, max_consecutive_errors: int = 100, seek_pts: int | None = None):
        self.path = os.fspath(path)
        self.max_consecutive_errors = max_consecutive_errors
        self.seek_pts = seek_pts
        self.frames_read = 0
        self.frames_without_pts = 0
        self._container: av.container.InputContainer | None = None
        self._stream: av.VideoStream | None = None

    def __enter__(self) -> VideoReader:
        self._container = _open_input(self.path)
        try:
            self._stream = _video_stream(self._container, self.path)
            # Threading must be chosen before the decoder opens (first decode).
            self._stream.thread_type = "AUTO"
            self._stream.thread_count = 0
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    def __iter__(self) -> Iterator[av.VideoFrame]:
        if self._container is None:
            raise RuntimeError("VideoReader must be used as a context manager")
        stream = self._stream
        time_base = stream.time_base
        if self.seek_pts is not None:
            try:
                self._container.seek(self.seek_pts, stream=stream, backward=True)
            except av.FFmpegError as exc:
                raise SeekError(f"{self.path}: cannot seek ({_reason(exc)})") from None
        # Frames with no timestamp at all get one a frame duration after the previous one.
        step = _missing_pts_step(stream)
        previous_pts = None
        for frame in _best_effort_pts(self._decoded_frames()):
            if frame.time_base is None:
                frame.time_base = time_base
            if frame.pts is None:
                frame.pts = 0 if previous_pts is None else previous_pts + step
                self.frames_without_pts += 1
            previous_pts = frame.pts
            self.frames_read += 1
            yield frame

        if self.frames_read == 0:
            raise InputError(f"{self.path}: no video frame could be decoded")
        self._warn_if_incomplete(_seconds(previous_pts, time_base))

    def _warn_if_incomplete(self, end: float | None) -> None:
        """Warn when fewer frames came out than the header promised (truncated file)."""
        stream = self._stream
        if stream.frames and self.seek_pts is None:
            if self.frames_read < stream.frames:
                log.warning(
                    "%s: only %d of %d frames could be decoded (file truncated or damaged?)",
                    self.path, self.frames_read, stream.frames,
                )
            return
        # No frame count (Matroska, MPEG-TS): compare times, leaving room for audio that outlasts the video.
        duration = _seconds(stream.duration, stream.time_base) or (self._container.duration or 0) / av.time_base
        start = _seconds(stream.start_time, stream.time_base) or 0.0
        if end is not None and duration and end - start < duration - max(1.0, 0.1 * duration):
            log.warning(
                "%s: the video stops at %.2f s but the file says it lasts %.2f s (file truncated?)",
                self.path, end - start, duration,
            )

    def _decoded_frames(self) -> Iterator[av.VideoFrame]:
        packets = self._container.demux(self._stream)
        failures = 0
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except av.FFmpegError as exc:
                log.warning("%s: cannot read past this point, stopping early (%s)", self.path, _reason(exc))
                packet = None  # drain the frames still inside the decoder
            try:
                yield from self._stream.decode(packet)
                failures = 0
            except av.FFmpegError as exc:
                failures += 1
                at = _seconds(packet.pts if packet else None, self._stream.time_base)
                where = f"at {at:.3f} s" if at is not None else "at an unknown time"
                if failures >= self.max_consecutive_errors:
                    raise InputError(
                        f"{self.path}: {failures} video packets in a row could not be decoded "
                        f"(last {where}: {_reason(exc)})"
                    ) from None
                log.warning("%s: skipped a damaged video packet %s (%s)", self.path, where, _reason(exc))
            if packet is None:
                return


class SeekError(InputError):
    """The file cannot be positioned by time; read it from the start instead."""


_PTS_LOOKAHEAD = 8  # frames held back while judging whether pts or dts is reliable


def _best_effort_pts(frames: Iterator[av.VideoFrame]) -> Iterator[av.VideoFrame]:
    """Give each frame FFmpeg's "best effort" timestamp.

    Normally that is the frame's pts. Some files carry pts that go backwards
    in presentation order (AVI with packed B-frames: 1, 2, 4, 3, 5, 7, 6...)
    while their dts count up; as FFmpeg does, the timestamp that went
    backwards less often wins. Unlike FFmpeg, the choice also applies to the
    few frames still held back, so the first reordered frames get it too.
    """
    held: list[av.VideoFrame] = []
    last_pts = last_dts = None
    faulty_pts = faulty_dts = 0

    def stamped(frame: av.VideoFrame) -> av.VideoFrame:
        if frame.dts is not None and (frame.pts is None or faulty_pts > faulty_dts):
            frame.pts = frame.dts
        return frame

    for frame in frames:
        if frame.pts is not None:
            faulty_pts += last_pts is not None and frame.pts <= last_pts
            last_pts = frame.pts
        if frame.dts is not None:
            faulty_dts += last_dts is not None and frame.dts <= last_dts
            last_dts = frame.dts
        held.append(frame)
        if len(held) > _PTS_LOOKAHEAD:
            yield stamped(held.pop(0))
    for frame in held:
        yield stamped(frame)


# --- deinterlacing ---------------------------------------------------------

DEINTERLACERS = ("bwdif", "yadif")


def deinterlaced(frames: Iterator[av.VideoFrame], method: str = "bwdif") -> Iterator[av.VideoFrame]:
    """Deinterlace every frame with FFmpeg's ``bwdif`` (or ``yadif``), one frame out per frame in.

    The filter runs in "send_frame" mode (one output frame per input frame,
    not one per field), finds the field order from each frame's flags (top
    field first if unflagged) and keeps every frame's pts and time base. A
    frame is held back until the next one arrives (the filter looks at both
    neighbours); the last ones come out when ``frames`` ends.
    """
    if method not in DEINTERLACERS:
        raise ValueError(f"unknown deinterlacer {method!r}: choose from {', '.join(DEINTERLACERS)}")
    graph = None
    shape = None
    waiting: list[av.VideoFrame] = []  # frames pushed and not yet out, for their time base

    def pulled() -> Iterator[av.VideoFrame]:
        while True:
            try:
                out = graph.pull()
            except (BlockingIOError, EOFError):
                return
            except av.FFmpegError as exc:
                if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK) or isinstance(exc, av.EOFError):
                    return
                raise
            source = waiting.pop(0)
            # The filter halves the time base (for field rates); send_frame mode keeps the times.
            if out.time_base and out.pts is not None and out.pts * out.time_base != source.pts * source.time_base:
                raise RuntimeError(f"{method} moved a frame from pts {source.pts} to {out.pts} x {out.time_base}")
            out.pts, out.time_base = source.pts, source.time_base
            yield out

    for frame in frames:
        if graph is None or shape != (frame.width, frame.height, frame.format.name):
            if graph is not None:  # the picture changed: drain the old graph first
                graph.push(None)
                yield from pulled()
            shape = (frame.width, frame.height, frame.format.name)
            graph = av.filter.Graph()
            source = graph.add_buffer(width=frame.width, height=frame.height, format=frame.format,
                                      time_base=frame.time_base)
            node = graph.add(method, "mode=send_frame:parity=auto:deint=all")
            sink = graph.add("buffersink")
            source.link_to(node)
            node.link_to(sink)
            graph.configure()
        waiting.append(frame)
        graph.push(frame)
        yield from pulled()
    if graph is not None:
        graph.push(None)
        yield from pulled()


# --- output formats --------------------------------------------------------


@dataclass(frozen=True)
class EncodeOptions:
    """How to encode the video. ``None`` picks the default for the extension/codec.

    ``crf`` applies to libx264 (default 18) and libvpx-vp9 (default 32);
    ``preset`` to libx264 (default "medium"), and to libvpx-vp9 through its
    ``cpu-used`` speed setting. ffv1 is lossless; mjpeg and mpeg2video use a
    fixed high quality.
    """

    codec: str | None = None
    crf: int | None = None
    preset: str | None = None
    pix_fmt: str | None = None
    overwrite: bool = False
    progressive: bool = False  # tag the output progressive (after deinterlacing)


@dataclass(frozen=True)
class _Container:
    """What colorvid writes into one kind of output file."""

    video_codecs: tuple[str, ...]  # the first one is the default
    audio_codec: str  # audio that cannot be copied is transcoded to this
    subtitle_codec: str | None  # text subtitles that cannot be copied become this; None: dropped
    # Codecs that may be stream-copied; None: ask the muxer. MPEG-TS/PS muxers answer
    # unreliably (PCM copied into .ts turned into a data stream), hence explicit lists.
    copy_audio: frozenset[str] | None = None
    copy_subtitles: frozenset[str] | None = None
    attachments: bool = False
    frame_indexed: bool = False  # timestamps are frame numbers (AVI): no variable frame rate
    # Let negative timestamps (AAC priming) through instead of shifting every stream:
    # these muxers handle them, and the shift cost AVI a frame slot.
    keep_negative_ts: bool = False
    # Codecs of extra video streams (a second angle, cover art) that may be stream-copied;
    # None: ask the muxer.
    copy_video: frozenset[str] | None = None


_CONTAINERS = {
    ".mp4": _Container(("libx264", "libvpx-vp9"), "aac", "mov_text"),
    ".mov": _Container(("libx264", "mjpeg"), "aac", "mov_text"),
    ".mkv": _Container(("libx264", "ffv1", "libvpx-vp9", "mjpeg"), "aac", "subrip", attachments=True),
    ".webm": _Container(("libvpx-vp9",), "libopus", "webvtt"),
    ".avi": _Container(
        ("mjpeg", "ffv1", "libx264"), "libmp3lame", None,
        copy_subtitles=frozenset(), frame_indexed=True, keep_negative_ts=True, copy_video=frozenset(),
    ),
    ".ts": _Container(
        ("libx264", "mpeg2video"), "aac", None,
        copy_audio=frozenset({"aac", "mp3", "mp2", "ac3", "eac3"}),
        copy_subtitles=frozenset({"dvb_subtitle"}),
        keep_negative_ts=True, copy_video=frozenset(),
    ),
    ".mpg": _Container(
        ("mpeg2video",), "mp2", None,
        copy_audio=frozenset({"mp2", "mp3", "ac3"}),
        copy_subtitles=frozenset({"dvd_subtitle"}),
        keep_negative_ts=True, copy_video=frozenset(),
    ),
}
# FFmpeg muxer of each extension (what av.open picks from the file name).
_MUXERS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm", ".avi": "avi", ".ts": "mpegts",
           ".mpg": "mpeg"}
_FIELD_PROGRESSIVE = 1  # AVFieldOrder

OUTPUT_EXTENSIONS = tuple(_CONTAINERS)
PIX_FMTS = ("yuv420p", "yuv422p", "yuv444p", "yuv420p10le", "yuv422p10le", "yuv444p10le")
X264_PRESETS = (
    "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo",
)
# libvpx-vp9 cpu-used for each x264 preset name (higher is faster).
_VP9_CPU_USED = dict(zip(X264_PRESETS, ("8", "7", "6", "5", "4", "3", "2", "1", "0", "0")))
# MPEG-2 only allows these frame rates.
_MPEG2_RATES = tuple(Fraction(r) for r in ("24000/1001", "24", "25", "30000/1001", "30", "50", "60000/1001", "60"))
_QSCALE = 3  # mjpeg/mpeg2video quantiser: 2 is best, 31 worst
_FF_QP2LAMBDA = 118


def _extension(path: str) -> str:
    return os.path.splitext(path)[1].lower()


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist
        return os.path.realpath(a) == os.path.realpath(b)


def check_output(
    path: str | os.PathLike,
    overwrite: bool = False,
    input_path: str | os.PathLike | None = None,
    codec: str | None = None,
    pix_fmt: str | None = None,
) -> None:
    """Refuse an output path that cannot work, before any decoding is done.

    Checks the extension (and that ``codec``/``pix_fmt``, if given, fit it),
    that the folder exists and is writable, that the path is not the input,
    and that it does not exist unless ``overwrite``.

    Raises:
        OutputError: naming the path and the reason.
    """
    path = os.fspath(path)
    ext = _extension(path)
    container = _CONTAINERS.get(ext)
    if container is None:
        raise OutputError(
            f"{path}: unknown output extension {ext or '(none)'!r}; use one of {', '.join(OUTPUT_EXTENSIONS)}"
        )
    if codec is not None and codec not in container.video_codecs:
        choices = ", ".join(container.video_codecs)
        raise OutputError(f"{path}: codec {codec} cannot be used for {ext} files; use {choices}")
    if pix_fmt is not None:
        codec = codec or container.video_codecs[0]
        supported = _pix_fmts_of(codec)
        if pix_fmt not in supported:
            choices = ", ".join(p for p in PIX_FMTS if p in supported)
            raise OutputError(f"{path}: codec {codec} cannot encode {pix_fmt}; use {choices}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise OutputError(f"{path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{path}: folder {folder} is not writable")
    if input_path is not None and _same_file(path, os.fspath(input_path)):
        raise OutputError(f"{path}: is the input file; choose another output name")
    if os.path.isdir(path):
        raise OutputError(f"{path}: is a folder")
    if os.path.lexists(path) and not overwrite:
        raise OutputError(f"{path}: already exists (use --overwrite to replace it)")


def _pix_fmts_of(codec: str) -> set[str]:
    return {f.name for f in av.Codec(codec, "w").video_formats or ()}


@dataclass(frozen=True)
class _Encoding:
    codec: str
    pix_fmt: str
    rate: Fraction
    time_base: Fraction  # of the encoder; frame pts are expressed in it
    full_range: bool
    options: dict[str, str]


def _choose_encoding(path: str, info: VideoInfo, options: EncodeOptions) -> _Encoding:
    """Codec, pixel format and encoder options for ``info`` written to ``path``.

    The picture keeps its size. libx264 cannot encode 4:2:0 at an odd width or
    height, so an odd-sized video defaults to yuv444p there; an explicit
    ``pix_fmt`` that cannot encode the size fails with an OutputError.

    The range is the input's, except for MJPEG: JPEG is full range (players
    assume it), so its pixel format is the yuvj variant.

    The encoder works in the input's time base, so every pts is kept, except
    for MPEG-2 and AVI, which only know a constant frame rate: there the time
    base is one frame and timestamps are rounded to frames.
    """
    container = _CONTAINERS[_extension(path)]
    codec = options.codec or container.video_codecs[0]
    odd = info.width % 2 or info.height % 2
    deep = info.bit_depth > 8 and codec in ("libx264", "ffv1")  # keep >8-bit sources >8-bit
    pix_fmt = options.pix_fmt
    if pix_fmt is None:
        pix_fmt = "yuv444p" if odd and codec == "libx264" else "yuv420p"
        if deep:
            pix_fmt += "10le"
    if codec == "mjpeg" and not pix_fmt.startswith("yuvj"):
        pix_fmt = pix_fmt.replace("yuv", "yuvj", 1)
    if pix_fmt not in _pix_fmts_of(codec):
        raise OutputError(f"{path}: codec {codec} cannot encode {pix_fmt}")
    if odd and codec == "libx264" and pix_fmt.startswith("yuv420p"):
        size = f"{info.width}x{info.height}"
        raise OutputError(f"{path}: libx264 cannot encode {pix_fmt} at the odd size {size}; use --pix-fmt yuv444p")
    if options.preset is not None and options.preset not in X264_PRESETS:
        raise OutputError(f"{path}: unknown preset {options.preset!r}; use one of {', '.join(X264_PRESETS)}")

    rate = info.frame_rate or Fraction(25)
    if codec == "libx264":
        opts = {"crf": str(18 if options.crf is None else options.crf), "preset": options.preset or "medium"}
    elif codec == "libvpx-vp9":
        opts = {
            "crf": str(32 if options.crf is None else options.crf),
            "b": "0",  # constant quality: no bitrate target
            "row-mt": "1",
            "deadline": "good",
            "cpu-used": _VP9_CPU_USED[options.preset or "fast"],
        }
    elif codec == "ffv1":
        opts = {"level": "3", "slicecrc": "1"}
    else:  # mjpeg, mpeg2video: a fixed quantiser
        opts = {"flags": "+qscale", "global_quality": str(_QSCALE * _FF_QP2LAMBDA)}
        if codec == "mpeg2video":
            rate = min(_MPEG2_RATES, key=lambda r: abs(r - rate))
    frame_indexed = container.frame_indexed or codec == "mpeg2video"
    time_base = 1 / rate if frame_indexed else info.time_base
    return _Encoding(codec, pix_fmt, rate, time_base, info.full_range or pix_fmt.startswith("yuvj"), opts)


# --- writing ---------------------------------------------------------------

_INTERLEAVE_MARGIN = 0.5  # seconds of audio/subtitles muxed ahead of the video


@contextmanager
def _output_errors(path: str):
    """Turn write failures into OutputError naming the target file."""
    try:
        yield
    except OutputError:
        raise
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise OutputError(f"{path}: disk full") from None
        if isinstance(exc, av.FFmpegError) or exc.errno is not None:
            raise OutputError(f"{path}: cannot write ({_reason(exc)})") from None
        raise


def _add_video_stream(
    container: av.container.OutputContainer, info: VideoInfo, encoding: _Encoding, progressive: bool
) -> av.VideoStream:
    """The output video stream with its encoder configured (not opened): codec, time base, tags."""
    stream = container.add_stream(
        encoding.codec, rate=encoding.rate, width=info.width, height=info.height, pix_fmt=encoding.pix_fmt,
        options=encoding.options,
    )
    stream.time_base = encoding.time_base
    ctx = stream.codec_context
    ctx.time_base = encoding.time_base
    default_tags = _TAGS_OF_MATRIX[info.matrix]
    ctx.color_primaries = info.color_primaries if info.color_primaries != _UNSPECIFIED else default_tags[0]
    ctx.color_trc = info.color_trc if info.color_trc != _UNSPECIFIED else default_tags[1]
    ctx.colorspace = info.colorspace if info.colorspace in _MATRIX_OF_COLORSPACE else default_tags[2]
    ctx.color_range = _RANGE_FULL if encoding.full_range else _RANGE_LIMITED
    if progressive:
        ctx.field_order = _FIELD_PROGRESSIVE
    if info.display_matrix is not None:
        stream.set_display_matrix(info.display_matrix)
    elif info.rotation:
        stream.set_display_rotation(-info.rotation)  # PyAV takes counter-clockwise degrees
    stream.metadata.update(info.stream_metadata)
    return stream


def _open_encoder(stream: av.VideoStream, path: str, info: VideoInfo, encoding: _Encoding) -> None:
    """Open now, so a codec that refuses the settings fails before any frame is decoded."""
    try:
        stream.codec_context.open()
    except av.FFmpegError as exc:
        raise OutputError(
            f"{path}: {encoding.codec} refuses {encoding.pix_fmt} at {info.width}x{info.height} ({_reason(exc)})"
        ) from None


class _FrameEncoder:
    """Frames to packets with an opened output stream's encoder: format conversion and timestamps.

    Each frame keeps its pts (rescaled to the encoder's time base); a pts that
    does not increase is moved one tick past the previous one (encoders refuse
    it), counted in ``bumped``. ``last_pts`` continues the count from earlier
    frames encoded elsewhere (the previous piece of a chunked run).
    """

    def __init__(self, stream: av.VideoStream, info: VideoInfo, encoding: _Encoding, last_pts: int | None = None):
        self.stream = stream
        self.info = info
        self.pix_fmt = encoding.pix_fmt
        self.sws_colorspace = info.sws_colorspace
        self.sws_color_range = "JPEG" if encoding.full_range else "MPEG"
        self.time_base = encoding.time_base
        self.last_pts = last_pts
        self.bumped = 0

    def encode(self, frame: av.VideoFrame) -> list[av.Packet]:
        if (frame.width, frame.height) != (self.info.width, self.info.height):
            raise ValueError(
                f"frame is {frame.width}x{frame.height}, the video is {self.info.width}x{self.info.height}"
            )
        pts = self._output_pts(frame)
        frame = self._in_output_format(frame)
        frame.pts = pts
        frame.time_base = self.time_base
        frame.pict_type = av.video.frame.PictureType.NONE  # let the encoder pick frame types
        return self.stream.encode(frame)

    def flush(self) -> list[av.Packet]:
        return self.stream.encode()

    def _output_pts(self, frame: av.VideoFrame) -> int:
        if frame.pts is None:
            step = round(1 / ((self.info.frame_rate or 25) * self.time_base)) or 1
            pts = 0 if self.last_pts is None else self.last_pts + step
        else:
            time_base = frame.time_base or self.info.time_base
            pts = frame.pts if time_base == self.time_base else round(frame.pts * time_base / self.time_base)
        if self.last_pts is not None and pts <= self.last_pts:
            pts = self.last_pts + 1
            self.bumped += 1
        self.last_pts = pts
        return pts

    def _in_output_format(self, frame: av.VideoFrame) -> av.VideoFrame:
        """Convert to the output pixel format, matrix and range.

        A Y'CbCr frame's own tags say what it is in; where it has none, it is
        taken to be in the output's matrix and range already. RGB frames
        only need the output side.
        """
        name = frame.format.name
        if name == self.pix_fmt:
            return frame
        src_colorspace, src_range = self.sws_colorspace, self.sws_color_range
        if name.startswith("yuv"):
            matrix = _MATRIX_OF_COLORSPACE.get(int(frame.colorspace))
            if matrix:
                src_colorspace = _SWS_COLORSPACE[matrix]
            if name.startswith("yuvj") or int(frame.color_range) == _RANGE_FULL:
                src_range = "JPEG"
            elif int(frame.color_range) == _RANGE_LIMITED:
                src_range = "MPEG"
        return frame.reformat(
            format=self.pix_fmt,
            src_colorspace=src_colorspace,
            dst_colorspace=self.sws_colorspace,
            src_color_range=src_range,
            dst_color_range=self.sws_color_range,
        )


class PacketEncoder:
    """Encodes frames into packets exactly as :class:`VideoWriter` would for ``output_path``,
    without writing anything.

    Resumable runs encode a film in pieces, each with a fresh encoder (so each
    piece starts with a keyframe and depends on no other), and later mux the
    packets with :meth:`VideoWriter.write_packet`. The encoder is set up by the
    same code as the writer's, inside an in-memory container of the output's
    format, so codec headers (``extradata``) and packets fit the final file.
    """

    def __init__(
        self,
        output_path: str | os.PathLike,
        info: VideoInfo,
        options: EncodeOptions = EncodeOptions(),
        last_pts: int | None = None,
    ):
        path = os.fspath(output_path)
        encoding = _choose_encoding(path, info, options)
        self.codec = encoding.codec
        self._container = av.open(io.BytesIO(), "w", format=_MUXERS[_extension(path)])
        try:
            stream = _add_video_stream(self._container, info, encoding, options.progressive)
            _open_encoder(stream, path, info, encoding)
        except BaseException:
            self.close()
            raise
        self._encoder = _FrameEncoder(stream, info, encoding, last_pts)
        self.pix_fmt = encoding.pix_fmt
        self.sws_colorspace = self._encoder.sws_colorspace
        self.sws_color_range = self._encoder.sws_color_range
        self.time_base = encoding.time_base

    @property
    def extradata(self) -> bytes:
        return bytes(self._encoder.stream.codec_context.extradata or b"")

    @property
    def last_pts(self) -> int | None:
        return self._encoder.last_pts

    @property
    def bumped(self) -> int:
        return self._encoder.bumped

    def encode(self, frame: av.VideoFrame) -> list[av.Packet]:
        return self._encoder.encode(frame)

    def flush(self) -> list[av.Packet]:
        return self._encoder.flush()

    def close(self) -> None:
        self._container.close()


class VideoWriter:
    """Encodes frames into ``output_path``; the file appears only on success.

    ::

        check_output(out, options.overwrite, info.path, options.codec, options.pix_fmt)  # early, optional
        with VideoWriter(out, info, options, passthrough_source=info.path) as writer:
            for frame in frames:
                writer.write(frame)

    Frames should be in ``writer.pix_fmt``, with ``writer.sws_colorspace``
    and ``writer.sws_color_range`` (the input's matrix and range; MJPEG is
    always full range, with a yuvj pixel format); frames in any other
    format are converted. Each frame's pts/time_base is kept (the output
    stream uses ``info.time_base``; MPEG-2 and AVI round to whole frames); a
    pts that does not increase is bumped by one tick, with a warning, because
    encoders refuse it.

    Packets made by a :class:`PacketEncoder` for the same path, info and
    options can be muxed instead (:meth:`write_packet`); ``extradata`` then
    gives their codec header, so the file describes them even if this
    machine's encoder would write another one.

    The audio, subtitle (and in .mkv attachment) streams of
    ``passthrough_source`` are carried over and interleaved with the video,
    and so are its other video streams (a second angle, cover art) where the
    container takes their codec.

    The output is written to ``.NAME.colorvid-tmp-XXXXXXXX.EXT`` in the target
    folder and renamed over the target when the ``with`` block ends without
    an exception; otherwise (including KeyboardInterrupt) the temporary file
    is deleted and the target is left alone.
    """

    def __init__(
        self,
        output_path: str | os.PathLike,
        info: VideoInfo,
        options: EncodeOptions = EncodeOptions(),
        passthrough_source: str | os.PathLike | None = None,
        extradata: bytes | None = None,
    ):
        self.path = os.fspath(output_path)
        self.info = info
        self.overwrite = options.overwrite
        check_output(self.path, options.overwrite, info.path, options.codec, options.pix_fmt)
        if passthrough_source is not None:
            passthrough_source = os.fspath(passthrough_source)
            check_output(self.path, options.overwrite, passthrough_source)
        encoding = _choose_encoding(self.path, info, options)
        self.codec = encoding.codec
        self.pix_fmt = encoding.pix_fmt
        self.sws_colorspace = self.info.sws_colorspace
        self.sws_color_range = "JPEG" if encoding.full_range else "MPEG"
        self.frames_written = 0
        self._time_base = encoding.time_base
        self._passthrough: _Passthrough | None = None
        self._container: av.container.OutputContainer | None = None
        self._encoder: _FrameEncoder | None = None
        self._temp_path = self._create_temp_file()
        try:
            with _output_errors(self.path):
                container = _CONTAINERS[_extension(self.path)]
                mux_options = {"avoid_negative_ts": "disabled"} if container.keep_negative_ts else {}
                self._container = av.open(self._temp_path, "w", options=mux_options)
                self._container.metadata.update(info.container_metadata)
                self._stream = _add_video_stream(self._container, info, encoding, options.progressive)
                if passthrough_source is not None:
                    self._passthrough = _Passthrough(passthrough_source, self._container, container)
                _open_encoder(self._stream, self.path, info, encoding)
                if extradata is not None:
                    self._stream.codec_context.extradata = extradata or None
                self._encoder = _FrameEncoder(self._stream, info, encoding)
        except BaseException:
            self._discard()
            raise

    def _create_temp_file(self) -> str:
        folder, name = os.path.split(os.path.abspath(self.path))
        stem, ext = os.path.splitext(name)
        while True:
            temp = os.path.join(folder, f".{stem}.colorvid-tmp-{secrets.token_hex(4)}{ext}")
            try:
                os.close(os.open(temp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
                return temp
            except FileExistsError:
                continue
            except OSError as exc:
                if exc.errno == errno.ENOSPC:
                    raise OutputError(f"{self.path}: disk full") from None
                raise OutputError(f"{self.path}: cannot create a file in {folder} ({exc.strerror})") from None

    @property
    def extradata(self) -> bytes:
        """The video codec header the file gets (empty for codecs without one)."""
        return bytes(self._stream.codec_context.extradata or b"")

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self._discard()
            return
        try:
            with _output_errors(self.path):
                if self.frames_written == 0:
                    raise OutputError(f"{self.path}: no frames to write")
                self._finish()
                if not self.overwrite and os.path.lexists(self.path):
                    raise OutputError(f"{self.path}: appeared while writing; not replaced (use --overwrite)")
                os.replace(self._temp_path, self.path)
        except BaseException:
            self._discard()
            raise
        if self._encoder.bumped:
            log.warning(
                "%s: %d frame(s) had a timestamp that did not increase; moved forward by one tick",
                self.path, self._encoder.bumped,
            )

    def write(self, frame: av.VideoFrame) -> None:
        """Encode ``frame`` (keeping its pts) and mux the passthrough streams up to its time."""
        with _output_errors(self.path):
            packets = self._encoder.encode(frame)
            pts = self._encoder.last_pts
            self._mux(packets)
            self.frames_written += 1
            if self._passthrough is not None:
                self._passthrough.mux_until(float(pts * self._time_base) + _INTERLEAVE_MARGIN)

    def write_packet(self, packet: av.Packet) -> None:
        """Mux one packet encoded elsewhere (a :class:`PacketEncoder`'s), in decoding order.

        Its pts/dts are in the encoder's time base; the passthrough streams are
        muxed up to its decoding time.
        """
        packet.stream = self._stream
        packet.time_base = self._time_base
        at = packet.dts if packet.dts is not None else packet.pts
        with _output_errors(self.path):
            self._mux(packet)
            self.frames_written += 1
            if self._passthrough is not None and at is not None:
                self._passthrough.mux_until(float(at * self._time_base) + _INTERLEAVE_MARGIN)

    def _mux(self, packets) -> None:
        self._container.mux(packets)

    def _finish(self) -> None:
        self._mux(self._encoder.flush())
        if self._passthrough is not None:
            self._passthrough.finish()
            self._passthrough.close()
        self._container.close()

    def _discard(self) -> None:
        """Close everything, ignoring errors, and delete the temporary file."""
        if self._passthrough is not None:
            self._passthrough.close()
        if self._container is not None:
            try:
                self._container.close()
            except Exception:  # the file is being thrown away anyway
                pass
        try:
            os.remove(self._temp_path)
        except FileNotFoundError:
            pass


# --- passthrough streams ---------------------------------------------------

_ASS_HEADER = b"""[Script Info]
ScriptType: v4.00+
PlayResX: 384
PlayResY: 288

[V4+ Styles]
Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, BackColour, Bold, Italic, Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, BorderStyle, Outline, Shadow, Alignment, MarginL, MarginR, MarginV, Encoding
Style: Default,Arial,16,&Hffffff,&Hffffff,&H0,&H0,0,0,0,0,100,100,0,0,1,1,0,2,10,10,10,0

[Events]
Format: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text
"""
_MICROSECOND = Fraction(1, 1_000_000)  # AVSubtitle.pts unit
_MILLISECOND = Fraction(1, 1000)  # AVSubtitle display time unit


class _Passthrough:
    """Carries the other streams of a source file into an output: audio, subtitles,
    attachments, and video streams besides the one colorized (second angles, cover art).

    A second demuxer reads the source alongside the video so packets can be
    muxed in time order with the video frames (``mux_until``). Each stream is
    copied packet for packet if the output container takes its codec,
    otherwise transcoded (audio to the container's audio codec, text
    subtitles to its subtitle codec), otherwise dropped with a warning
    (extra video is only ever copied).
    """

    def __init__(self, source: str, output: av.container.OutputContainer, container: _Container):
        self.source = source
        self._input = _open_input(source)
        self._output = output
        self._routes: dict[int, tuple[str, av.stream.Stream, av.stream.Stream]] = {}
        self._pending: av.Packet | None = None
        self._done = False
        self._main_video = next((s for s in self._input.streams.video if not _is_cover_art(s)), None)
        try:
            supported = output.supported_codecs
            for stream in self._input.streams:
                self._add_route(stream, container, supported)
            streams = [self._input.streams[i] for i in self._routes if self._input.streams[i].type != "attachment"]
            self._packets = self._input.demux(streams) if streams else iter(())
        except BaseException:
            self.close()
            raise

    def _add_route(self, stream: av.stream.Stream, container: _Container, supported: set[str]) -> None:
        kind = stream.type
        if kind == "attachment":
            if container.attachments:
                out = self._output.add_stream_from_template(stream)
                self._routes[stream.index] = ("copy", stream, out)
            else:
                log.warning(
                    "%s: attachment stream #%d dropped (the output format cannot hold it)", self.source, stream.index
                )
            return
        if kind == "video" and stream is self._main_video:
            return  # that is the one being colorized
        if kind not in ("audio", "subtitle", "video"):
            return
        name = stream.codec_context.codec.canonical_name
        allowed = {"audio": container.copy_audio, "subtitle": container.copy_subtitles,
                   "video": container.copy_video}[kind]
        copyable = name in allowed if allowed is not None else name in supported
        out, route = None, "copy"
        if copyable:
            try:
                out = self._output.add_stream_from_template(stream)
            except ValueError:  # the muxer refuses it after all
                out = None
        if out is None and kind == "video":
            what = "cover art" if _is_cover_art(stream) else "video"
            log.warning(
                "%s: %s stream #%d (%s) not carried over: the output format cannot hold it",
                self.source, what, stream.index, name,
            )
            return
        if out is None:
            route = kind  # transcode
            if kind == "audio":
                out = self._add_audio_encoder(stream, container.audio_codec)
            else:
                out = self._add_subtitle_encoder(stream, container.subtitle_codec)
        if out is None:
            return
        out.metadata.update(_kept_tags(stream.metadata))
        out.disposition = stream.disposition
        self._routes[stream.index] = (route, stream, out)
        log.debug("%s: stream #%d (%s %s): %s", self.source, stream.index, kind, name, route)

    def _add_audio_encoder(self, stream: av.AudioStream, codec: str) -> av.AudioStream:
        rates = av.Codec(codec, "w").audio_rates
        rate = stream.rate
        if rates and rate not in rates:
            rate = 48000 if 48000 in rates else max(rates)
        channels = stream.codec_context.channels
        # Name the layout: encoders refuse an unnamed "N channels" layout.
        layout = {1: "mono", 2: "stereo"}.get(channels, stream.codec_context.layout.name)
        return self._output.add_stream(codec, rate=rate, layout=layout)

    def _add_subtitle_encoder(self, stream: av.stream.Stream, codec: str | None) -> av.stream.Stream | None:
        name = stream.codec_context.codec.canonical_name
        is_text = stream.codec_context.codec.text_sub
        if codec is None or not is_text:
            what = "text" if is_text else "bitmap"
            log.warning(
                "%s: %s subtitle stream #%d (%s) dropped: the output format cannot hold it",
                self.source, what, stream.index, name,
            )
            return None
        stream.codec_context.open()  # the decoder provides the ASS header the encoder needs
        out = self._output.add_stream(codec)
        out.codec_context.time_base = _MILLISECOND
        out.codec_context.subtitle_header = stream.codec_context.subtitle_header or _ASS_HEADER
        return out

    def mux_until(self, seconds: float) -> None:
        """Mux source packets whose time is at most ``seconds``."""
        while not self._done:
            if self._pending is None:
                try:
                    self._pending = next(self._packets)
                except StopIteration:
                    self._done = True
                    return
                except av.FFmpegError as exc:
                    log.warning("%s: cannot read audio/subtitles past this point (%s)", self.source, _reason(exc))
                    self._done = True
                    return
            packet = self._pending
            if packet.size == 0:  # demuxer flush packet
                self._pending = None
                continue
            at = _seconds(packet.pts if packet.pts is not None else packet.dts, packet.time_base)
            if at is not None and at > seconds:
                return
            self._pending = None
            self._mux_packet(packet)

    def _mux_packet(self, packet: av.Packet) -> None:
        route, source_stream, out = self._routes[packet.stream_index]
        if route == "copy":
            packet.stream = out
            self._output.mux(packet)
            return
        try:
            if route == "audio":
                decoded = source_stream.decode(packet)
            else:
                decoded = [source_stream.codec_context.decode2(packet)]
        except av.FFmpegError as exc:
            at = _seconds(packet.pts, packet.time_base)
            log.warning(
                "%s: skipped a damaged %s packet at %s s (%s)", self.source, source_stream.type, at, _reason(exc)
            )
            return
        for item in decoded:
            if route == "audio":
                self._output.mux(out.encode(item))
            elif item is not None and len(item):
                self._mux_subtitle(item, out)

    def _mux_subtitle(self, subtitle: av.subtitles.subtitle.SubtitleSet, out: av.stream.Stream) -> None:
        # As ffmpeg does: move the display start into pts, encode, and time the packet.
        start = subtitle.pts * _MICROSECOND + subtitle.start_display_time * _MILLISECOND
        duration = (subtitle.end_display_time - subtitle.start_display_time) * _MILLISECOND
        subtitle.end_display_time -= subtitle.start_display_time
        subtitle.start_display_time = 0
        packet = out.codec_context.encode_subtitle(subtitle)
        packet.stream = out
        packet.time_base = _MICROSECOND  # mux() rescales to the stream's time base
        packet.pts = packet.dts = round(start / _MICROSECOND)
        packet.duration = round(duration / _MICROSECOND)
        self._output.mux(packet)

    def finish(self) -> None:
        """Mux everything left and flush the audio encoders."""
        self.mux_until(math.inf)
        for route, source_stream, out in self._routes.values():
            if route == "audio":
                try:
                    frames = source_stream.decode(None)
                except av.FFmpegError:
                    frames = []
                for frame in frames:
                    self._output.mux(out.encode(frame))
                self._output.mux(out.encode())

    def close(self) -> None:
        self._input.close()
