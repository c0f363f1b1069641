"""Reading: :class:`VideoReader`, the one way colorvid decodes video, and deinterlacing.

Frames come in presentation order with their original ``pts`` and
``time_base`` (repaired where the file's are unreliable or missing); cover
art is never taken for the video.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Iterator
from fractions import Fraction

import av
import av.container
import av.error
import av.filter

from colorvid.errors import InputError, SeekError
from colorvid.io.probe import (
    ffmpeg_reason,
    missing_pts_step,
    open_input,
    pts_seconds,
    video_stream,
)

log = logging.getLogger(__name__)

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
        self._sought = False  # a seek happened: the frame count cannot be checked
        self._container: av.container.InputContainer | None = None
        self._stream: av.VideoStream | None = None

    def __enter__(self) -> VideoReader:
        self._container = open_input(self.path)
        try:
            self._stream = video_stream(self._container, self.path)
            # Threading must be chosen before the decoder opens (first decode).
            self._stream.thread_type = "AUTO"
            self._stream.thread_count = 0
            assert self._stream.time_base is not None, "FFmpeg gives every demuxed stream a time base"
            self.time_base = self._stream.time_base
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
        return self.frames_from(self.seek_pts)

    def frames_from(self, seek_pts: int | None) -> Iterator[av.VideoFrame]:
        """The frames from the keyframe at or before ``seek_pts`` (None: from where decoding is).

        May be called again to jump elsewhere in the file; the iterator of the
        previous call must not be used after that.
        """
        container, stream = self._opened()
        time_base = stream.time_base
        if seek_pts is not None:
            self._sought = True
            try:
                container.seek(seek_pts, stream=stream, backward=True)
            except av.error.FFmpegError as exc:
                raise SeekError(f"{self.path}: cannot seek ({ffmpeg_reason(exc)})") from None
        # Frames with no timestamp at all get one a frame duration after the previous one.
        step = missing_pts_step(stream)
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
        self._warn_if_incomplete(pts_seconds(previous_pts, time_base))

    def _opened(self) -> tuple[av.container.InputContainer, av.VideoStream]:
        """The open container and its video stream (both are set together in ``__enter__``)."""
        if self._container is None or self._stream is None:
            raise RuntimeError("VideoReader must be used as a context manager")
        return self._container, self._stream

    def _warn_if_incomplete(self, end: float | None) -> None:
        """Warn when fewer frames came out than the header promised (truncated file)."""
        container, stream = self._opened()
        if stream.frames and not self._sought:
            if self.frames_read < stream.frames:
                log.warning(
                    "%s: only %d of %d frames could be decoded (file truncated or damaged?)",
                    self.path, self.frames_read, stream.frames,
                )
            return
        # No frame count (Matroska, MPEG-TS): compare times, leaving room for audio that outlasts the video.
        duration = pts_seconds(stream.duration, stream.time_base) or (container.duration or 0) / av.time_base
        start = pts_seconds(stream.start_time, stream.time_base) or 0.0
        if end is not None and duration and end - start < duration - max(1.0, 0.1 * duration):
            log.warning(
                "%s: the video stops at %.2f s but the file says it lasts %.2f s (file truncated?)",
                self.path, end - start, duration,
            )

    def _decoded_frames(self) -> Iterator[av.VideoFrame]:
        container, stream = self._opened()
        packets = container.demux(stream)
        failures = 0
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except av.error.FFmpegError as exc:
                log.warning("%s: cannot read past this point, stopping early (%s)", self.path, ffmpeg_reason(exc))
                packet = None  # drain the frames still inside the decoder
            try:
                yield from stream.decode(packet)
                failures = 0
            except av.error.FFmpegError as exc:
                failures += 1
                at = pts_seconds(packet.pts if packet else None, stream.time_base)
                where = f"at {at:.3f} s" if at is not None else "at an unknown time"
                if failures >= self.max_consecutive_errors:
                    raise InputError(
                        f"{self.path}: {failures} video packets in a row could not be decoded "
                        f"(last {where}: {ffmpeg_reason(exc)})"
                    ) from None
                log.warning("%s: skipped a damaged video packet %s (%s)", self.path, where, ffmpeg_reason(exc))
            if packet is None:
                return


def frame_pts(frame: av.VideoFrame) -> int:
    """The pts of a frame that came through :class:`VideoReader`, which gives every frame one."""
    assert frame.pts is not None, "a frame VideoReader did not stamp"
    return frame.pts


def frame_time(frame: av.VideoFrame) -> Fraction:
    """pts x time_base, exact, of a frame that came through :class:`VideoReader`, which gives every frame both."""
    assert frame.pts is not None and frame.time_base is not None, "a frame VideoReader did not stamp"
    return frame.pts * frame.time_base


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
    neighbors); the last ones come out when ``frames`` ends.
    """
    if method not in DEINTERLACERS:
        raise ValueError(f"unknown deinterlacer {method!r}: choose from {', '.join(DEINTERLACERS)}")
    graph: av.filter.Graph | None = None
    shape = None
    waiting: list[av.VideoFrame] = []  # frames pushed and not yet out, for their time base

    def pulled(graph: av.filter.Graph) -> Iterator[av.VideoFrame]:
        while True:
            try:
                out = graph.vpull()  # the graph's one sink is a video buffersink
            except (BlockingIOError, EOFError):
                return
            except av.error.FFmpegError as exc:
                if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK) or isinstance(exc, av.error.EOFError):
                    return
                raise
            source = waiting.pop(0)
            # The filter halves the time base (for field rates); send_frame mode keeps the times.
            if out.time_base and out.pts is not None:
                assert source.pts is not None and source.time_base is not None, "VideoReader stamps every frame"
                if out.pts * out.time_base != source.pts * source.time_base:
                    raise RuntimeError(f"{method} moved a frame from pts {source.pts} to {out.pts} x {out.time_base}")
            out.pts, out.time_base = source.pts, source.time_base
            yield out

    for frame in frames:
        if graph is None or shape != (frame.width, frame.height, frame.format.name):
            if graph is not None:  # the picture changed: drain the old graph first
                graph.push(None)
                yield from pulled(graph)
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
        yield from pulled(graph)
    if graph is not None:
        graph.push(None)
        yield from pulled(graph)


# --- output formats --------------------------------------------------------
