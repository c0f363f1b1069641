"""Frames as image files: extract a video to numbered images, stitch them back.

``extract_frames`` writes ``frame_000001.png``... and a ``manifest.json`` that
records everything needed to rebuild the video: the source path, the
:class:`~colorvid.io.VideoInfo` (time base, rate, size, rotation, color
tags, metadata) and each frame's file name and pts. The images can then be
edited or colorized by any tool; ``stitch_frames`` encodes them again with the
original timestamps and carries the source's audio and subtitles over.
:mod:`colorvid.keyframes` writes its folders with the same helpers
(:class:`ImageEncoder`, :func:`prepare_folder`, :func:`write_manifest`).
"""

from __future__ import annotations

import collections
import dataclasses
import errno
import json
import logging
import os
from fractions import Fraction

import av
import av.error

from colorvid import atomic
from colorvid.errors import InputError, OutputError
from colorvid.io import (
    EncodeOptions,
    VideoInfo,
    VideoReader,
    VideoWriter,
    check_output,
    probe,
)

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
# A manifest's "kind" when it has none: every frame of the video, as extract_frames writes.
# Other kinds (colorvid.keyframes writes "keyframes") hold some frames only.
FRAMES_KIND = "frames"
IMAGE_FORMATS = ("png", "jpg", "tiff")

# Image encoder and pixel format for 8-bit and deeper sources. PNG and TIFF keep
# 16 bits per channel for >8-bit video; JPEG is 8-bit Y'CbCr 4:4:4 (JFIF).
_IMAGE_ENCODERS = {
    "png": ("png", "rgb24", "rgb48be"),
    "tiff": ("tiff", "rgb24", "rgb48le"),
    "jpg": ("mjpeg", "yuvj444p", "yuvj444p"),
}
_JPEG_QSCALE = 2  # best quality the mjpeg encoder offers
_FF_QP2LAMBDA = 118


def frame_file_name(index: int, image_format: str) -> str:
    """``frame_000001.png`` for index 0: numbered from 1, at least six digits."""
    return f"frame_{index + 1:06d}.{image_format}"


class ImageEncoder:
    """Encodes decoded video frames to image files with one reusable PyAV encoder.

    A threaded encoder may return a packet a few frames later, so the file
    names wait in a queue and are paired with packets in order.
    """

    def __init__(self, image_format: str, info: VideoInfo):
        codec, shallow, deep = _IMAGE_ENCODERS[image_format]
        self.pix_fmt = deep if info.bit_depth > 8 else shallow
        self._info = info
        context = av.CodecContext.create(codec, "w")
        assert isinstance(context, av.VideoCodecContext), f"{codec} is an image (video) encoder"
        self._context = context
        self._context.width = info.width
        self._context.height = info.height
        self._context.pix_fmt = self.pix_fmt
        self._context.time_base = Fraction(1, 25)  # unused by image encoders, but required
        if codec == "mjpeg":
            self._context.color_range = 2  # JPEG is full range
            self._context.options = {"flags": "+qscale", "global_quality": str(_JPEG_QSCALE * _FF_QP2LAMBDA)}
        self._pending: collections.deque[str] = collections.deque()
        self._count = 0

    def write(self, frame: av.VideoFrame, path: str) -> None:
        source_colorspace, source_range = self._info.sws_colorspace, self._info.sws_color_range
        if self.pix_fmt.startswith("yuvj"):  # JPEG is BT.601 full range: go through RGB
            image = frame.reformat(format="rgb24", src_colorspace=source_colorspace, src_color_range=source_range)
            image = image.reformat(format=self.pix_fmt, dst_colorspace="itu601", dst_color_range="JPEG")
        else:
            image = frame.reformat(format=self.pix_fmt, src_colorspace=source_colorspace, src_color_range=source_range)
        image.pts, image.time_base = self._count, self._context.time_base  # encoders want increasing pts
        self._count += 1
        self._pending.append(path)
        self._save(self._context.encode(image))

    def flush(self) -> None:
        self._save(self._context.encode(None))

    def _save(self, packets) -> None:
        for packet in packets:
            path = self._pending.popleft()
            try:
                with open(path, "wb") as f:
                    f.write(bytes(packet))
            except OSError as exc:
                reason = "disk full" if exc.errno == errno.ENOSPC else f"cannot write ({exc.strerror})"
                raise OutputError(f"{path}: {reason}") from None


def extract_frames(
    input_path: str | os.PathLike, out_dir: str | os.PathLike, image_format: str = "png", overwrite: bool = False
) -> int:
    """Write every frame of ``input_path`` into ``out_dir`` as an image; return the count.

    ``manifest.json`` is written last (through a temporary name), so a folder
    with a manifest always holds a complete extraction; if extraction fails
    or is interrupted, the images written so far are removed. With
    ``overwrite``, a previous extraction in the folder (its manifest and
    listed frames) is removed first.

    Raises:
        InputError: the input cannot be read.
        OutputError: the folder cannot be written, or holds frames already.
    """
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image_format must be one of {IMAGE_FORMATS}, not {image_format!r}")
    input_path, out_dir = os.fspath(input_path), os.fspath(out_dir)
    info = probe(input_path)
    prepare_folder(out_dir, overwrite)

    encoder = ImageEncoder(image_format, info)
    entries = []
    try:
        with VideoReader(input_path) as reader:
            for index, frame in enumerate(reader):
                name = frame_file_name(index, image_format)
                entries.append({"file": name, "pts": frame.pts})
                encoder.write(frame, os.path.join(out_dir, name))
            encoder.flush()
        write_manifest(out_dir, input_path, info, image_format, len(entries), entries)
    except BaseException:
        remove_frames(out_dir, entries)
        raise
    return len(entries)


def write_manifest(
    out_dir: str,
    source: str,
    info: VideoInfo,
    image_format: str,
    frame_count: int,
    entries: list[dict],
    kind: str | None = None,
) -> None:
    """Write ``out_dir``'s manifest (through a temporary name): the source video, its
    :class:`~colorvid.io.VideoInfo`, how many frames it has, and ``entries``, one dict per image
    with at least "file" and "pts". ``kind`` marks a folder that does not hold every frame
    (see :data:`FRAMES_KIND`).

    Raises:
        OutputError: the manifest cannot be written.
    """
    source = os.path.abspath(source)
    manifest: dict = {"colorvid_manifest": MANIFEST_VERSION}
    if kind is not None:
        manifest["kind"] = kind
    manifest.update(
        source=source,
        image_format=image_format,
        frame_count=frame_count,
        video=dataclasses.replace(info, path=source).to_dict(),
        frames=entries,
    )
    _write_json(os.path.join(out_dir, MANIFEST_NAME), manifest)


def remove_frames(out_dir: str, entries: list[dict]) -> None:
    """Delete the images of manifest ``entries`` from ``out_dir``; those already gone are skipped."""
    for entry in entries:
        try:
            os.remove(os.path.join(out_dir, os.path.basename(entry["file"])))
        except FileNotFoundError:
            pass


def prepare_folder(out_dir: str, overwrite: bool) -> None:
    """Make ``out_dir`` ready for an extraction: create it, and refuse (or, with ``overwrite``,
    clear: its manifest first, then the images it lists) a folder that holds a manifest.

    Raises:
        OutputError: not a writable folder, or one with a manifest and no ``overwrite``.
    """
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise OutputError(f"{out_dir}: exists and is not a folder")
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{out_dir}: cannot create the folder ({exc.strerror})") from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise OutputError(f"{out_dir}: folder is not writable")
    manifest_path = os.path.join(out_dir, MANIFEST_NAME)
    if not os.path.exists(manifest_path):
        return
    if not overwrite:
        raise OutputError(
            f"{out_dir}: already holds extracted frames ({MANIFEST_NAME}); use --overwrite to replace them"
        )
    try:
        old = read_manifest(out_dir)
    except InputError:
        old = {"frames": []}
    os.remove(manifest_path)  # first, so an interrupted re-extraction is not mistaken for a complete one
    remove_frames(out_dir, old["frames"])


def _write_json(path: str, data: dict) -> None:
    try:
        atomic.write_text(path, json.dumps(data, indent=1))
    except OSError as exc:
        raise OutputError(f"{path}: cannot write ({exc.strerror})") from None


def read_manifest(frames_dir: str | os.PathLike) -> dict:
    """The manifest of a folder made by :func:`extract_frames` (or another writer of
    :func:`write_manifest`, such as :func:`colorvid.keyframes.extract_keyframes`).

    Raises:
        InputError: no manifest, or one that cannot be read.
    """
    path = os.path.join(os.fspath(frames_dir), MANIFEST_NAME)
    if not os.path.isdir(frames_dir):
        raise InputError(f"{frames_dir}: no such folder")
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
        VideoInfo.from_dict(manifest["video"])
        frames = manifest["frames"]
        if not frames or not all("file" in e and isinstance(e.get("pts"), int) for e in frames):
            raise ValueError("bad frame list")
    except FileNotFoundError:
        raise InputError(f"{path}: missing (is {frames_dir} a folder made by 'colorvid frames extract'?)") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{path}: not a valid colorvid manifest ({exc})") from None
    return manifest


def stitch_frames(
    frames_dir: str | os.PathLike,
    output_path: str | os.PathLike,
    options: EncodeOptions = EncodeOptions(),
    audio_from: str | os.PathLike | None = None,
) -> int:
    """Encode the images listed in ``frames_dir``'s manifest into a video; return the count.

    Each image gets the pts recorded at extraction, so timing (including a
    variable frame rate) matches the source. Audio and subtitles come from
    ``audio_from``, or else from the source recorded in the manifest; if that
    file no longer exists the video is written without them, with a warning.
    Images may have been edited by other tools but must keep their size.

    Raises:
        InputError: missing manifest, one that does not list every frame
            (keyframes), a missing or unreadable frame, or a frame of the
            wrong size (the message names the image file).
        OutputError: the output cannot be written.
    """
    frames_dir, output_path = os.fspath(frames_dir), os.fspath(output_path)
    manifest = read_manifest(frames_dir)
    kind = manifest.get("kind", FRAMES_KIND)
    if kind != FRAMES_KIND:
        raise InputError(f"{frames_dir}: holds {kind}, not every frame of the video; "
                         "'frames stitch' takes a folder made by 'colorvid frames extract'")
    info = VideoInfo.from_dict(manifest["video"])
    source = os.fspath(audio_from) if audio_from is not None else manifest["source"]
    check_output(output_path, options.overwrite, source, options.codec, options.pix_fmt)

    paths = [os.path.join(frames_dir, entry["file"]) for entry in manifest["frames"]]
    for path in paths:
        if not os.path.isfile(path):
            raise InputError(f"{path}: frame missing (listed in {MANIFEST_NAME})")

    passthrough = source
    if audio_from is None and not os.path.exists(source):
        log.warning("%s: source video not found; the output will have no audio or subtitles (use --audio-from)", source)
        passthrough = None

    with VideoWriter(output_path, info, options, passthrough_source=passthrough) as writer:
        for path, entry in zip(paths, manifest["frames"]):
            frame = _read_image(path, info)
            frame.pts = entry["pts"]
            frame.time_base = info.time_base
            writer.write(frame)
    return len(paths)


def _read_image(path: str, info: VideoInfo) -> av.VideoFrame:
    """Decode one image file; Y'CbCr images (JPEG) come back as RGB."""
    try:
        with av.open(path) as container:
            frame = next(container.decode(video=0), None)
    except (av.error.FFmpegError, IndexError) as exc:
        raise InputError(f"{path}: not a readable image ({getattr(exc, 'strerror', None) or 'no picture'})") from None
    if frame is None:
        raise InputError(f"{path}: not a readable image (no picture)")
    if (frame.width, frame.height) != (info.width, info.height):
        raise InputError(f"{path}: image is {frame.width}x{frame.height}, the video is {info.width}x{info.height}")
    if frame.format.name.startswith("yuv"):
        full = frame.format.name.startswith("yuvj") or int(frame.color_range) == 2
        frame = frame.reformat(
            format="rgb24", src_colorspace="itu601", src_color_range="JPEG" if full else "MPEG"
        )
    return frame

