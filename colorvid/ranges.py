"""Which frames a run covers: the whole film, part I of N (``--segment``), or a time range
(``--range``), as a :class:`FrameRange` of timestamps, and the parsing of those options."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction


@dataclass(frozen=True)
class FrameRange:
    """The frames whose pts (in the source stream's time base) lie in [start, end).

    ``None`` leaves a side open: the first part of a film starts at None and
    the last ends at None, so together the parts hold every frame exactly
    once. ``label`` names the part ("part2of8", "part60-120").
    """

    start: int | None = None
    end: int | None = None
    label: str = ""

    def contains(self, pts: int) -> bool:
        return (self.start is None or pts >= self.start) and (self.end is None or pts < self.end)

    @property
    def whole(self) -> bool:
        return self.start is None and self.end is None

    def to_dict(self) -> dict:
        return {"start": self.start, "end": self.end, "label": self.label}

    @classmethod
    def from_dict(cls, data: dict) -> FrameRange:
        return cls(data.get("start"), data.get("end"), data.get("label", ""))


def parse_segment(text: str) -> tuple[int, int]:
    """"I/N" -> (I, N), 1 <= I <= N.

    Raises:
        ValueError: with the reason.
    """
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match:
        raise ValueError(f"{text!r} is not I/N (e.g. 2/8)")
    index, count = int(match[1]), int(match[2])
    if count < 1 or not 1 <= index <= count:
        raise ValueError(f"{text!r}: I must be between 1 and N")
    return index, count


def parse_time(text: str) -> Fraction:
    """Seconds ("90", "90.5") or [H:]MM:SS[.fff] -> exact seconds."""
    parts = text.strip().split(":")
    if not 1 <= len(parts) <= 3 or not all(re.fullmatch(r"\d+(\.\d*)?", p) for p in parts):
        raise ValueError(f"{text!r} is not a time (seconds, or [H:]MM:SS)")
    seconds = Fraction(0)
    for part in parts:
        seconds = seconds * 60 + Fraction(part)
    return seconds


def parse_range(text: str) -> tuple[Fraction, Fraction | None]:
    """"START-END" in seconds or [H:]MM:SS; END may be left out ("600-") for the end of the film."""
    start_text, sep, end_text = text.partition("-")
    if not sep:
        raise ValueError(f"{text!r} is not START-END (e.g. 600-1200, or 600- for the rest)")
    start = parse_time(start_text) if start_text.strip() else Fraction(0)
    end = parse_time(end_text) if end_text.strip() else None
    if end is not None and end <= start:
        raise ValueError(f"{text!r}: the end must come after the start")
    return start, end


def segment_range(index: int, count: int, start_pts: int, end_pts: int) -> FrameRange:
    """Part ``index`` of ``count`` equal spans of the stream's [start_pts, end_pts) timeline."""
    length = end_pts - start_pts

    def bound(k: int) -> int | None:
        return None if k in (0, count) else start_pts + length * k // count

    return FrameRange(bound(index - 1), bound(index), f"part{index}of{count}")


def time_range(start: Fraction, end: Fraction | None, start_pts: int, time_base: Fraction) -> FrameRange:
    """Seconds from the first frame -> a FrameRange; a start at 0 takes everything before too."""

    def bound(seconds: Fraction | None) -> int | None:
        return None if seconds is None or seconds <= 0 else start_pts + math.ceil(seconds / time_base)

    label = f"part{_seconds_label(start)}-{_seconds_label(end) if end is not None else 'end'}"
    return FrameRange(bound(start), bound(end), label)


def _seconds_label(seconds: Fraction) -> str:
    return str(int(seconds)) if seconds.denominator == 1 else f"{float(seconds):g}"
