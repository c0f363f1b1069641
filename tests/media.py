"""Helpers shared by the test modules: synthetic clips and images made with PyAV
and Pillow, and what a user would look at in the files colorvid writes.

Every test builds its own media into ``tmp_path``: nothing here reads files
from outside the test. Times are exact ``Fraction`` seconds (pts x time_base)
so clips written with different time bases compare equal.

The fixtures (model files, the CLI runner) are in conftest.py.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path

import av
import av.subtitles.subtitle
import numpy as np
from PIL import Image

LANGUAGES = ("eng", "fra", "deu", "spa")
AUDIO_RATE = 48000
# Irregular frame durations for variable-frame-rate clips, in milliseconds (so
# they stay exact in Matroska's 1/1000 time base too).
VFR_DURATIONS_MS = (42, 42, 83, 42, 125, 33, 42, 67)
VFR_TIME_BASE = Fraction(1, 90000)  # as phones write

_VIDEO_CODEC = {".webm": "libvpx-vp9", ".avi": "mjpeg"}
_AUDIO_CODEC = {".webm": "libopus", ".avi": "libmp3lame"}
_SUBTITLE_CODEC = {".mp4": "mov_text", ".mov": "mov_text", ".mkv": "subrip", ".webm": "webvtt"}
_FAST_OPTIONS = {
    "libx264": {"preset": "ultrafast"},
    "libvpx-vp9": {"deadline": "realtime", "cpu-used": "8"},
}
ASS_HEADER = (  # an ASS script header, byte for byte; its long Format line is split over three literals
    b"[Script Info]\n"
    b"ScriptType: v4.00+\n"
    b"PlayResX: 384\n"
    b"PlayResY: 288\n"
    b"\n"
    b"[V4+ Styles]\n"
    b"Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, BackColour, Bold, Italic, "
    b"Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, BorderStyle, Outline, Shadow, Alignment, MarginL, MarginR, "
    b"MarginV, Encoding\n"
    b"Style: Default,Arial,16,&Hffffff,&Hffffff,&H0,&H0,0,0,0,0,100,100,0,0,1,1,0,2,10,10,10,0\n"
    b"\n"
    b"[Events]\n"
    b"Format: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text\n"
)
SUBTITLE_TEXTS = ("Hello", "World")
TINT_AB = (30.0, 25.0)  # the ab the ``tinted_model`` fixture predicts everywhere: a warm orange
KEY_AB = (-20.0, -25.0)  # the ``key_model`` fixture's: cyan-blue, far from the tinted model's warm orange
FONT_BYTES = b"\x00\x01\x00\x00 not really a font"
SHOT_LEVELS = (0, 170, 85)  # added to each shot of make_shots in turn (gray levels 0..85, 170..255, 85..170)


def frame_times(frames: int, fps: int = 24, vfr: bool = False) -> list[Fraction]:
    """Presentation times of a clip's frames, in seconds."""
    if not vfr:
        return [Fraction(i, fps) for i in range(frames)]
    times, t = [], 0
    for i in range(frames):
        times.append(Fraction(t, 1000))
        t += VFR_DURATIONS_MS[i % len(VFR_DURATIONS_MS)]
    return times


def synthetic_rgb(index: int, width: int, height: int, color: bool = True) -> np.ndarray:
    """A (height, width, 3) uint8 picture: a gradient with a moving square and disc.

    ``color=False`` gives the same scene in gray (R = G = B).
    """
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    rgb = np.empty((height, width, 3), np.float32)
    rgb[..., 0] = 40 + 150 * x / max(width - 1, 1)
    rgb[..., 1] = 60 + 120 * y / max(height - 1, 1)
    rgb[..., 2] = 170 - 100 * x / max(width - 1, 1)
    side = max(4, min(width, height) // 4)
    left = (index * 3) % max(1, width - side)
    top = (index * 2) % max(1, height - side)
    rgb[top : top + side, left : left + side] = (230, 40, 40)
    cx, cy, r = width - 1 - (index * 2) % width, height // 2, max(3, min(width, height) // 6)
    rgb[(x - cx) ** 2 + (y - cy) ** 2 <= r * r] = (30, 200, 60)
    if not color:
        rgb[:] = (0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2])[..., None]
    return rgb.round().clip(0, 255).astype(np.uint8)


def make_clip(
    path,
    width: int = 64,
    height: int = 48,
    frames: int = 12,
    fps: int = 24,
    vfr: bool = False,
    audio_tracks: int = 1,
    subtitles: bool = False,
    rotation: int = 0,
    color: bool = True,
    codec: str | None = None,
    pix_fmt: str = "yuv420p",
    title: str | None = "colorvid test clip",
    font_attachment: bool = False,
    picture: Callable[[int, int, int], np.ndarray] | None = None,
) -> list[Fraction]:
    """Write a clip and return the presentation time (seconds) of every frame in it.

    The times are read back from the file, so they include the container's
    rounding (Matroska stores milliseconds).

    The container follows the extension. ``codec`` defaults to libx264
    (libvpx-vp9 for .webm, mjpeg for .avi). Audio tracks are sine tones (AAC,
    Opus in .webm, MP3 in .avi), stereo for the first track and mono after,
    tagged with ``LANGUAGES``. Subtitles (mov_text in .mp4/.mov, SubRip in
    .mkv, WebVTT in .webm) show ``SUBTITLE_TEXTS``, tagged "eng".
    ``rotation`` is the clockwise display rotation, stored as a display matrix.
    ``font_attachment`` (Matroska only) attaches a small fake font file.
    CFR clips use the time base 1/fps; VFR ones 1/90000 with irregular steps.
    ``picture(index, width, height)`` draws frame ``index`` (RGB, uint8); the default is
    :func:`synthetic_rgb` (in gray with ``color=False``).
    """
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    codec = codec or _VIDEO_CODEC.get(ext, "libx264")
    if codec == "mjpeg":  # JPEG is full range: its pixel formats are the yuvj ones
        pix_fmt = pix_fmt.replace("yuv", "yuvj")
    times = frame_times(frames, fps, vfr)
    time_base = VFR_TIME_BASE if vfr else Fraction(1, fps)
    end = times[-1] + Fraction(1, fps)

    with av.open(path, "w") as out:
        if title:
            out.metadata["title"] = title
        video = out.add_stream(
            codec, rate=fps, width=width, height=height, pix_fmt=pix_fmt, options=_FAST_OPTIONS.get(codec, {})
        )
        video.codec_context.time_base = time_base
        video.time_base = time_base
        video.metadata["language"] = "eng"
        if rotation:
            video.set_display_rotation(-rotation)  # PyAV takes counter-clockwise degrees
        audio = []
        for track in range(audio_tracks):
            layout = "stereo" if track == 0 else "mono"
            stream = out.add_stream(_AUDIO_CODEC.get(ext, "aac"), rate=AUDIO_RATE, layout=layout)
            stream.metadata["language"] = LANGUAGES[track % len(LANGUAGES)]
            audio.append(stream)
        subtitle = None
        if subtitles:
            subtitle = out.add_stream(_SUBTITLE_CODEC[ext])
            subtitle.codec_context.time_base = Fraction(1, 1000)
            subtitle.codec_context.subtitle_header = ASS_HEADER
            subtitle.metadata["language"] = "eng"
        if font_attachment:
            out.add_attachment("font.ttf", "application/x-truetype-font", FONT_BYTES)

        for index, t in enumerate(times):
            rgb = picture(index, width, height) if picture else synthetic_rgb(index, width, height, color)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=pix_fmt)
            frame.pts = int(t / time_base)
            frame.time_base = time_base
            out.mux(video.encode(frame))
        out.mux(video.encode())

        for track, stream in enumerate(audio):
            _write_tone(out, stream, 220 * (track + 2), end)
        if subtitle is not None:
            _write_subtitles(out, subtitle, end)
    return read_video_pts(path)


def make_shots(path, shots: Sequence[int] = (8, 8, 8), **clip_options) -> list[Fraction]:
    """A gray clip of ``len(shots)`` shots, ``shots[k]`` frames each; returns every frame's time.

    Each shot is the :func:`synthetic_rgb` scene at a third of its contrast, lifted by
    SHOT_LEVELS (in turn): consecutive shots share no gray level, so any cut detector
    sees the cuts, and only there. ``clip_options`` go to :func:`make_clip`.
    """
    starts = np.cumsum((0, *shots))

    def picture(index: int, width: int, height: int) -> np.ndarray:
        shot = int(np.searchsorted(starts, index, side="right")) - 1
        return synthetic_rgb(index, width, height, color=False) // 3 + SHOT_LEVELS[shot % len(SHOT_LEVELS)]

    return make_clip(path, frames=int(starts[-1]), picture=picture, **clip_options)


def shot_starts(shots: Sequence[int]) -> list[int]:
    """Index of the first frame of each shot of a :func:`make_shots` clip."""
    return [int(start) for start in np.cumsum((0, *shots))[:-1]]


def _write_tone(out, stream, frequency: float, duration: Fraction) -> None:
    total = int(duration * AUDIO_RATE)
    channels = stream.codec_context.channels
    chunk = 1024
    for start in range(0, total, chunk):
        n = min(chunk, total - start)
        t = (start + np.arange(n)) / AUDIO_RATE
        samples = np.tile((0.2 * np.sin(2 * np.pi * frequency * t)).astype(np.float32), (channels, 1))
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout=stream.codec_context.layout.name)
        frame.sample_rate = AUDIO_RATE
        frame.pts = start
        frame.time_base = Fraction(1, AUDIO_RATE)
        out.mux(stream.encode(frame))
    out.mux(stream.encode())


def _write_subtitles(out, stream, duration: Fraction) -> None:
    slot = duration / len(SUBTITLE_TEXTS)
    for index, text in enumerate(SUBTITLE_TEXTS):
        start_ms = int(index * slot * 1000)
        length_ms = int(slot * 1000 * 0.8)
        cue = av.subtitles.subtitle.SubtitleSet.create(f"0,0,Default,,0,0,0,,{text}".encode(), 0, length_ms)
        packet = stream.codec_context.encode_subtitle(cue)
        packet.stream = stream
        packet.time_base = Fraction(1, 1000)
        packet.pts = packet.dts = start_ms
        packet.duration = length_ms
        out.mux(packet)


def make_audio_only(path, seconds: float = 0.5) -> None:
    """An .m4a/.mka/... file with one AAC stream and no video."""
    with av.open(os.fspath(path), "w") as out:
        stream = out.add_stream("aac", rate=AUDIO_RATE, layout="mono")
        _write_tone(out, stream, 440, Fraction(seconds))


def make_damaged_clip(
    path, frames: int = 12, damaged: tuple[int, ...] = (4, 5), width: int = 64, height: int = 48
) -> None:
    """An MJPEG .mkv whose packets at the ``damaged`` indexes are garbage bytes.

    The other frames decode, so a reader should skip the damaged ones and go on.
    """
    rng = np.random.default_rng(0)
    with av.open(os.fspath(path), "w") as out:
        stream = out.add_stream("mjpeg", rate=24, width=width, height=height, pix_fmt="yuvj420p")
        stream.codec_context.time_base = Fraction(1, 24)
        for index in range(frames):
            frame = av.VideoFrame.from_ndarray(synthetic_rgb(index, width, height), format="rgb24")
            frame = frame.reformat(format="yuvj420p")
            frame.pts = index
            for packet in stream.encode(frame):
                if index in damaged:
                    garbage = av.Packet(rng.integers(0, 256, packet.size, dtype=np.uint8).tobytes())
                    garbage.stream, garbage.time_base = stream, packet.time_base
                    garbage.pts = garbage.dts = packet.pts
                    packet = garbage
                out.mux(packet)


def make_images(folder, count: int = 24, size: int = 80):
    """A new folder of ``count`` noisy one-color PNG pictures, each of another color; returns it."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        base = rng.integers(0, 256, 3)
        img = np.clip(base + rng.normal(0, 30, (size, size, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"img{i:03d}.png")
    return folder


def truncate(path, keep: float = 0.5) -> None:
    """Cut a file to the first ``keep`` fraction of its bytes."""
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(int(size * keep))


# --- inspection -------------------------------------------------------------


def assert_one_line_error(status: int, err: str, named: str) -> None:
    """The command failed as colorvid reports errors: exit 1, one line on stderr naming ``named``."""
    lines = err.strip().splitlines()
    assert status == 1, err
    assert len(lines) == 1 and lines[0].startswith("colorvid: error: ") and named in lines[0], err


def temporary_files(folder) -> list[str]:
    """Names in ``folder`` of unfinished writes: colorvid's temporary files, old naming or new."""
    return sorted(name for name in os.listdir(folder) if ".colorvid-tmp" in name)


def image_files(folder) -> list[str]:
    """Names in ``folder`` of the images 'frames extract' and 'keyframes extract' write, sorted."""
    return sorted(name for name in os.listdir(folder) if name.startswith("frame_"))


def leftovers(folder) -> list[str]:
    """What no finished or failed run leaves in ``folder``: temporary files, work folders, parts."""
    return sorted(name for name in os.listdir(folder)
                  if ".colorvid-tmp" in name or ".colorvid-work" in name or ".part" in name)


def decoded_planes(path) -> list[np.ndarray]:
    """Every frame's Y'CbCr 4:4:4 planes, (3, H, W) int arrays."""
    with av.open(os.fspath(path)) as container:
        return [f.reformat(format="yuv444p").to_ndarray().astype(int) for f in container.decode(video=0)]


def luma_planes(path) -> list[np.ndarray]:
    """Every frame's Y' plane as floats."""
    with av.open(os.fspath(path)) as container:
        return [f.reformat(format="gray").to_ndarray().astype(np.float64) for f in container.decode(video=0)]


def y_psnr(a, b) -> float:
    """PSNR (dB) of two clips' luma, over all their frames; inf when identical."""
    mse = np.mean([np.mean((x - y) ** 2) for x, y in zip(luma_planes(a), luma_planes(b))])
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def mean_chroma_offset(path) -> float:
    """Mean distance of Cb/Cr from neutral over the whole clip (0 for gray)."""
    with av.open(os.fspath(path)) as container:
        offsets = []
        for frame in container.decode(video=0):
            yuv = frame.reformat(format="yuv444p").to_ndarray().astype(np.float64)
            offsets.append(np.hypot(yuv[1] - 128, yuv[2] - 128).mean())
    return float(np.mean(offsets))


def read_video_pts(path) -> list[Fraction]:
    """Decode the whole first video stream; presentation time (s) of every frame."""
    with av.open(os.fspath(path)) as container:
        stream = container.streams.video[0]
        return [frame.pts * frame.time_base for frame in container.decode(stream)]


def audio_packets(path) -> list[list[tuple[Fraction, int, str]]]:
    """Per audio stream: (time relative to its first packet, size, sha1) of every packet."""
    with av.open(os.fspath(path)) as container:
        streams = container.streams.audio
        if not streams:  # demux() with no stream would read them all
            return []
        result = {s.index: [] for s in streams}
        first = {}
        for packet in container.demux(streams):
            if packet.size == 0:
                continue
            time = packet.pts * packet.time_base
            start = first.setdefault(packet.stream_index, time)
            result[packet.stream_index].append((time - start, packet.size, hashlib.sha1(bytes(packet)).hexdigest()))
        return [result[s.index] for s in streams]


def subtitle_texts(path) -> list[list[str]]:
    """Per subtitle stream: the text of every cue, in order."""
    with av.open(os.fspath(path)) as container:
        streams = container.streams.subtitles
        if not streams:  # demux() with no stream would read them all
            return []
        texts = {s.index: [] for s in streams}
        for packet in container.demux(streams):
            if packet.size == 0:
                continue
            cues = packet.stream.codec_context.decode2(packet)
            for rect in cues or ():
                texts[packet.stream_index].append(rect.dialogue.decode())
        return [[t for t in texts[s.index] if t] for s in streams]


def stream_summary(path) -> dict:
    """Format, container tags and a short description of every stream."""
    with av.open(os.fspath(path)) as container:
        streams = []
        for stream in container.streams:
            ctx = stream.codec_context
            entry = {
                "index": stream.index,
                "type": stream.type,
                "codec": ctx.codec.canonical_name if ctx is not None else None,
                "language": stream.metadata.get("language"),
                "title": stream.metadata.get("title"),
            }
            if stream.type == "video":
                assert ctx is not None  # decodable streams have one; attachments have None
                entry.update(width=ctx.width, height=ctx.height, pix_fmt=ctx.pix_fmt)
                entry.update(colorspace=int(ctx.colorspace), color_range=int(ctx.color_range))
                entry.update(rotation=_rotation(container, stream))
            elif stream.type == "audio":
                assert ctx is not None
                entry.update(channels=ctx.channels, rate=ctx.sample_rate)
            streams.append(entry)
        return {"format": container.format.name, "metadata": dict(container.metadata), "streams": streams}


def _rotation(container, stream) -> int:
    """Clockwise display rotation of a video stream, read from its first frame."""
    for frame in container.decode(stream):
        return -frame.rotation % 360
    return 0


def chunks_recorded(work_folder) -> bool:
    """Whether a run's work folder (``.NAME.colorvid-work``) records a finished chunk."""
    try:
        return bool(json.loads((Path(work_folder) / "state.json").read_text())["chunks"])
    except (OSError, ValueError, KeyError):
        return False


def wait_for_a_chunk(work_folder, timeout: float = 60.0) -> None:
    """Wait until ``work_folder`` records a finished chunk: the encoder thread may lag behind the
    network on a busy machine, and a run stopped before any chunk is done keeps nothing to resume."""
    deadline = time.monotonic() + timeout
    while not chunks_recorded(work_folder) and time.monotonic() < deadline:
        time.sleep(0.05)


def interrupt_image_writes(monkeypatch, after: str) -> None:
    """Make the frame image encoder raise KeyboardInterrupt right after it writes the file named ``after``."""
    from colorvid.frames import ImageEncoder

    original = ImageEncoder.write

    def write_then_interrupt(self, frame, path):
        original(self, frame, path)
        if path.endswith(after):
            raise KeyboardInterrupt

    monkeypatch.setattr(ImageEncoder, "write", write_then_interrupt)


def stop_on_call(monkeypatch, call: int, action, counter: dict | None = None):
    """Make the colorizer run ``action`` instead of its ``call``-th batch (1-based); count frames colorized."""
    from colorvid.colorizer import FrameColorizer

    counter = counter if counter is not None else {}
    counter.update(calls=0, frames=0)
    original = FrameColorizer.colorize_frames

    def patched(self, frames, work_format, *args, **kwargs):
        counter["calls"] += 1
        if counter["calls"] == call:
            action()
        counter["frames"] += len(frames)
        return original(self, frames, work_format, *args, **kwargs)

    monkeypatch.setattr(FrameColorizer, "colorize_frames", patched)
    return counter


def raise_interrupt():
    raise KeyboardInterrupt


def after_a_chunk(work_folder, action):
    """``action``, run once ``work_folder`` records a finished chunk (the encoder thread may lag behind)."""

    def wait_then_act():
        wait_for_a_chunk(work_folder)
        action()

    return wait_then_act
