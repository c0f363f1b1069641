"""Which decoded frames a run colorizes and writes: all of them, or those of a part of the film
or after a resume point, with the frames before them that the temporal smoother must see."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

from colorvid.errors import InputError, SeekError
from colorvid.io import VideoInfo, VideoReader, deinterlaced, frame_pts
from colorvid.ranges import FrameRange

log = logging.getLogger("colorvid")


class FrameSelection:
    """The decoded frames a run needs, each with whether it is written: ``(frame, keep)``.

    A run that starts inside the film (a resume, or a part other than the
    first) also needs the frames just before its first one: ``warmup`` frames
    are colorized but not written, so the temporal smoother has the state an
    uninterrupted run would have; with deinterlacing, a few more go through
    the filter only (it looks at neighboring frames), and so do a few after
    a part's end. No other frame reaches the network.

    Frames are told apart by their timestamps. Decoding starts at a keyframe
    before the first frame needed (found by a first pass that only decodes,
    from a seek point that is moved back until it is early enough); a file
    that cannot seek, or has frames without timestamps, is decoded from its
    start. ``reached_end`` says whether decoding reached the end of the file.
    """

    _CONTEXT_AFTER = 2  # frames after a part's end, for the deinterlacer
    _SEEK_MARGIN = 2.0  # seconds before the frames needed

    def __init__(
        self, source: Path, info: VideoInfo, frames: FrameRange, done_pts: int | None, warmup: int,
        deinterlace: str | None,
    ):
        self.source = source
        self.info = info
        self.frames = frames
        self.done_pts = done_pts
        self.warmup = warmup
        self.deinterlace = deinterlace
        self.filter_context = 2 if deinterlace else 0
        self.reached_end = False

    def _before(self, pts: int) -> bool:
        """Does this frame come before the first one to write?"""
        start, done = self.frames.start, self.done_pts
        return (start is not None and pts < start) or (done is not None and pts <= done)

    def _wanted(self, pts: int) -> bool:
        return self.frames.contains(pts) and not self._before(pts)

    def __iter__(self) -> Iterator[tuple]:
        seek_pts, context = None, []
        if self.frames.start is not None or self.done_pts is not None:
            seek_pts, context = self._find_context()
        warm = set(context[max(0, len(context) - self.warmup):]) if self.warmup else set()
        context = set(context)
        with VideoReader(self.source, seek_pts=seek_pts) as reader:

            def decoded():
                after_end = 0
                for frame in reader:
                    pts = frame_pts(frame)
                    if self._before(pts) and pts not in context:
                        continue
                    if self.frames.end is not None and pts >= self.frames.end:
                        after_end += 1
                        if after_end > (self._CONTEXT_AFTER if self.deinterlace else 0):
                            return
                    yield frame
                self.reached_end = True

            stream = deinterlaced(decoded(), self.deinterlace) if self.deinterlace else decoded()
            told = False
            for frame in stream:
                pts = frame_pts(frame)
                if self._wanted(pts):
                    if not told and not self.deinterlace and frame.interlaced_frame:
                        log.info("%s: the video is interlaced; --deinterlace may look better", self.source)
                    told = True
                    yield frame, True
                elif pts in warm:
                    yield frame, False

    def _find_context(self) -> tuple[int | None, list[int]]:
        """(seek point, pts of the frames needed before the first one to write).

        Raises:
            InputError: a resumed run's last written frame is no longer in the file.
        """
        count = self.warmup + self.filter_context
        boundary = max(b for b in (self.frames.start, self.done_pts) if b is not None)
        time_base = self.info.time_base
        rate = self.info.frame_rate or 25
        margin = max(self._SEEK_MARGIN, 2 * (count + 1) / float(rate))
        for factor in (1, 4, 16):
            target = boundary - round(Fraction(margin * factor) / time_base)
            if target <= round(Fraction(self.info.start_time) / time_base):
                break  # that is the start of the file anyway
            try:
                found = self._scan(target, count)
            except SeekError:
                break
            if found is not None:
                return target, found
        found = self._scan(None, count)
        if found is None:
            # From the start of the file, only a frame done before that is missing fails the scan.
            assert self.done_pts is not None
            at = float(self.done_pts * time_base)
            raise InputError(
                f"{self.source}: the frame at {at:.3f} s, the last one done before, is not in the file any more; "
                "it decodes differently than when this run started (use --overwrite to start over)"
            )
        return None, found

    def _scan(self, seek_pts: int | None, count: int) -> list[int] | None:
        """Decode from ``seek_pts`` to the first frame to write; the pts of the ``count`` frames
        before it, or None if the seek did not land early enough (or timestamps are unreliable)."""
        context: deque[int] = deque(maxlen=count or None)
        seen_done = self.done_pts is None
        first = True
        with VideoReader(self.source, seek_pts=seek_pts) as reader:
            try:
                for frame in reader:
                    if seek_pts is not None and reader.frames_without_pts:
                        return None
                    pts = frame_pts(frame)
                    if not self._before(pts):
                        if first and seek_pts is not None:
                            return None  # landed after the frames needed
                        break
                    first = False
                    seen_done = seen_done or pts == self.done_pts
                    if count:
                        context.append(pts)
            except InputError:
                if seek_pts is not None:
                    return None
                raise
        if not seen_done:
            return None
        if seek_pts is not None and len(context) < count:
            return None  # too close to the seek point: start earlier
        return list(context)
