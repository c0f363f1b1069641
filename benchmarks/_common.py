"""Shared by the benchmark scripts: the model to measure and synthetic black-and-white clips.

The scripts import it as ``_common`` (Python puts the script's folder on
sys.path); they also put the repository root there, so they run from a
checkout without installing colorvid.
"""

from __future__ import annotations

import os
import sys
import tempfile
from fractions import Fraction
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import av  # noqa: E402
import numpy as np  # noqa: E402

import colorvid  # noqa: E402,F401  (before torch: it sets torch's thread wait policy, as the CLI gets it)

RESOLUTIONS = {"480p": (854, 480), "720p": (1280, 720), "1080p": (1920, 1080)}
FPS = 24
AUDIO_RATE = 48000
_NOISE_FRAMES = 5  # film grain patterns, cycled


def resolve_model(name: str | None, workdir: Path) -> str | None:
    """The --model value to measure with: ``name``, else the registry default, else a random model.

    A random-initialized model has the architecture (so the speed) of a real
    one; its colors are meaningless. Returns None for the registry default.
    """
    from colorvid.weights import load_registry

    if name:
        print(f"model: {name}")
        return name
    registry = load_registry()
    if registry.default is not None:
        print(f"model: {registry.default} (the registry default)")
        return None
    import torch

    from colorvid.models.effnet_unet import Colorizer, ModelConfig, save_model

    path = workdir / "random-init.safetensors"
    torch.manual_seed(0)
    save_model(Colorizer(ModelConfig()), path)
    print(f"model: NOTE no model is registered ({registry.path} sets no default); measuring a random-initialized "
          "model of the same architecture (same speed, meaningless colors)")
    return str(path)


def work_folder(path: str | None) -> tuple[Path, tempfile.TemporaryDirectory | None]:
    """(folder, handle to keep alive): ``path``, created if needed, or a temporary folder deleted at exit."""
    if path:
        Path(path).mkdir(parents=True, exist_ok=True)
        return Path(path), None
    handle = tempfile.TemporaryDirectory(prefix="colorvid-bench-")
    return Path(handle.name), handle


def synthesize_clip(path: Path, width: int, height: int, seconds: float, *, audio: bool = True,
                    preset: str = "veryfast") -> int:
    """Write a black-and-white film-like clip: panning gradient, moving shapes, grain, flicker.

    H.264 yuv420p at 24 fps with a mono AAC track. Reuses ``path`` if it
    exists. Returns the number of frames.
    """
    frames = max(1, round(seconds * FPS))
    if path.exists():
        return frames
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:2 * width].astype(np.float32)
    background = 60 + 100 * (0.5 + 0.5 * np.sin(x / (0.7 * width) * np.pi)) * (0.6 + 0.4 * y / height)
    grain = [rng.normal(0, 9, (height, width)).astype(np.float32) for _ in range(_NOISE_FRAMES)]
    side = height // 4
    radius = height // 6
    disc_y, disc_x = np.mgrid[-radius:radius, -radius:radius]
    disc = disc_x**2 + disc_y**2 <= radius**2
    temp = path.with_name(path.stem + ".partial" + path.suffix)
    with av.open(str(temp), "w", format="mp4") as out:
        video = out.add_stream("libx264", rate=FPS, width=width, height=height, pix_fmt="yuv420p",
                               options={"preset": preset, "crf": "20"})
        video.codec_context.time_base = Fraction(1, FPS)
        sound = out.add_stream("aac", rate=AUDIO_RATE, layout="mono") if audio else None
        for i in range(frames):
            shift = (i * 3) % width
            picture = background[:, shift : shift + width].copy()
            left = int((width - side) * (0.5 + 0.45 * np.sin(i / 40)))
            top = int((height - side) * (0.5 + 0.4 * np.cos(i / 55)))
            picture[top : top + side, left : left + side] = 215
            cx = int(radius + (width - 2 * radius - 1) * ((i * 5) % (2 * width)) / (2 * width))
            cy = height // 2
            picture[cy - radius : cy + radius, cx - radius : cx + radius][disc] = 25
            picture *= 1 + 0.03 * np.sin(i * 1.7)  # projector flicker
            picture += grain[i % _NOISE_FRAMES]
            gray = picture.clip(0, 255).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(gray, format="gray").reformat(format="yuv420p")
            frame.pts = i
            frame.time_base = Fraction(1, FPS)
            out.mux(video.encode(frame))
        out.mux(video.encode())
        if sound is not None:
            _write_tone(out, sound, Fraction(frames, FPS))
    os.replace(temp, path)
    return frames


def _write_tone(out, stream, duration: Fraction) -> None:
    total = int(duration * AUDIO_RATE)
    for start in range(0, total, 1024):
        n = min(1024, total - start)
        t = (start + np.arange(n)) / AUDIO_RATE
        samples = (0.1 * np.sin(2 * np.pi * 330 * t)).astype(np.float32)[None]
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate = AUDIO_RATE
        frame.pts = start
        frame.time_base = Fraction(1, AUDIO_RATE)
        out.mux(stream.encode(frame))
    out.mux(stream.encode())


def repeat_clip(source: Path, target: Path, repeats: int) -> None:
    """Concatenate ``source`` with itself by copying packets (nothing is encoded): a long input, cheaply.

    Each copy's timestamps are shifted by the span of that stream in the
    source, so every stream stays monotonic. Reuses ``target`` if it exists.
    """
    if target.exists():
        return
    temp = target.with_name(target.stem + ".partial" + target.suffix)
    with av.open(str(source)) as inp:
        starts: dict[int, int] = {}
        ends: dict[int, int] = {}
        for packet in inp.demux():
            # Annotated: pyright, checking for Python 3.10, cannot type `with av.open(...) as inp`
            # (PyAV's stubs import typing.Self, which 3.10 lacks).
            pts: int | None = packet.pts
            if packet.size and pts is not None:
                index = packet.stream_index
                starts[index] = min(starts.get(index, pts), pts)
                ends[index] = max(ends.get(index, pts), pts + (packet.duration or 0))
        spans = {index: ends[index] - starts[index] for index in starts}
    with av.open(str(source)) as template, av.open(str(temp), "w", format="mp4") as out:
        streams = {s.index: out.add_stream_from_template(s) for s in template.streams if s.type in ("video", "audio")}
        for copy in range(repeats):
            with av.open(str(source)) as inp:
                for packet in inp.demux():
                    if packet.size == 0 or packet.stream_index not in streams:
                        continue
                    shift = copy * spans[packet.stream_index]
                    if packet.pts is not None:
                        packet.pts += shift
                    if packet.dts is not None:
                        packet.dts += shift
                    packet.stream = streams[packet.stream_index]
                    out.mux(packet)
    os.replace(temp, target)


def add_pipeline_arguments(parser) -> None:
    """--model, --device, --batch-size and --render-size, as the colorize pipeline takes them."""
    parser.add_argument("--model", help="model name or file (default: the registry default)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--render-size", type=int, default=None, help="default: the model's")


def print_table(rows: list[tuple[str, ...]]) -> None:
    """Rows of strings as left-aligned columns, after a blank line."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    print()
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
