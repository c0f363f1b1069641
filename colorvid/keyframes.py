"""Keyframes: the few frames of a film that a colorist colors by hand.

For keyframe-guided colorization, a colorist paints one frame per shot (and a
few more in long shots), and colorvid carries those colors through each shot.
:func:`extract_keyframes` picks and writes the frames to paint: the first frame
of every shot, found by the scene-cut detector the temporal smoothers use
(:func:`colorvid.smoothing.detect_cuts`, on Lab lightness at a small size),
and, with ``every``, one more whenever that many seconds have passed since the
shot's last keyframe.

A keyframe folder looks like one made by ``colorvid frames extract``: lossless
images named by the frame's 1-based number in the whole film
(``frame_000001.png`` is its first frame), and a ``manifest.json`` that
:func:`colorvid.frames.read_manifest` reads. Its top-level ``"kind"`` is
``"keyframes"`` (so ``frames stitch`` refuses it: it does not hold every
frame), ``frame_count`` is the number of frames in the film, and each entry of
``"frames"`` is a :class:`Keyframe`: its ``file``, ``pts`` (in the video's
time base), ``index`` (0-based frame number in the film), ``time`` (seconds
from the start of the video, as ``colorvid preview`` gives them) and ``shot``
(0-based shot number).

:class:`KeyframeSet` reads such a folder back once painted: any subset of
frames, as PNG, JPEG or TIFF, numbered by the same names (the manifest maps
numbers to timestamps; without one, the film's frames are counted).
:mod:`colorvid.propagation` carries their colors through the shots.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import json
import math
import os
import re
from collections.abc import Generator, Iterable, Iterator, Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from av.video.reformatter import Colorspace, VideoReformatter

from colorvid.color import WORK_FORMATS, luma_to_lightness, work_format
from colorvid.errors import InputError
from colorvid.frames import (
    IMAGE_FORMATS,
    MANIFEST_NAME,
    ImageEncoder,
    frame_file_name,
    prepare_folder,
    remove_frames,
    write_manifest,
)
from colorvid.io import VideoInfo, VideoReader, frame_pts, frame_time, probe
from colorvid.smoothing import detect_cuts

MANIFEST_KIND = "keyframes"
# Short side (pixels) of the lightness the cut detector sees: about the size at which
# the colorizer's smoother looks for cuts (the default model's output, a quarter of its
# 256-pixel input), so both find the same shots, and small enough to cost next to nothing.
CUT_SHORT_SIDE = 64


@dataclasses.dataclass(frozen=True)
class Keyframe:
    """One keyframe: its image in the folder and where it is in the film."""

    file: str  # the image's name in the folder, e.g. frame_000001.png
    pts: int  # in the video's time base
    index: int  # 0-based frame number in the film
    time: float  # seconds from the start of the video
    shot: int  # 0-based shot number

    def to_dict(self) -> dict:
        """The keyframe's entry in the manifest's "frames" list."""
        return dataclasses.asdict(self)


def extract_keyframes(
    film: str | os.PathLike,
    out_dir: str | os.PathLike,
    every: float | None = None,
    image_format: str = "png",
    overwrite: bool = False,
) -> list[Keyframe]:
    """Write the first frame of every shot of ``film`` into ``out_dir`` as an image; return them.

    With ``every`` (seconds), a frame is also written whenever that much time
    has passed since the last keyframe of its shot. The film is decoded once;
    only the frames written are converted to RGB and encoded. The folder is
    written as :func:`colorvid.frames.extract_frames` writes its own: a folder
    that holds a manifest is refused unless ``overwrite`` (which removes the
    frames it lists first), the manifest is written last, and a run that fails
    or is interrupted removes the images it wrote.

    Raises:
        ValueError: an unknown ``image_format``, or ``every`` not above 0.
        InputError: the film cannot be read.
        OutputError: the folder cannot be written, or holds frames already.
    """
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image_format must be one of {IMAGE_FORMATS}, not {image_format!r}")
    if every is not None and not every > 0:
        raise ValueError(f"every must be a number of seconds above 0, not {every!r}")
    film, out_dir = os.fspath(film), os.fspath(out_dir)
    info = probe(film)
    prepare_folder(out_dir, overwrite)

    # The decimal the user wrote (0.1 s is 1/10 s, not the float nearest to it), to compare exactly with
    # frame times; an infinite step adds nothing.
    step = None if every is None or math.isinf(every) else Fraction(repr(float(every)))
    encoder = ImageEncoder(image_format, info)
    keyframes: list[Keyframe] = []
    try:
        with VideoReader(film) as reader:
            for index, shot, frame in _pick(reader, info, step):
                name = frame_file_name(index, image_format)
                time = round(float(frame_time(frame)) - info.start_time, 6)
                keyframes.append(Keyframe(name, frame_pts(frame), index, time, shot))
                encoder.write(frame, os.path.join(out_dir, name))
            encoder.flush()
            frame_count = reader.frames_read
        entries = [keyframe.to_dict() for keyframe in keyframes]
        write_manifest(out_dir, film, info, image_format, frame_count, entries, kind=MANIFEST_KIND)
    except BaseException:
        remove_frames(out_dir, [{"file": keyframe.file} for keyframe in keyframes])
        raise
    return keyframes


def _pick(
    frames: Iterable[av.VideoFrame], info: VideoInfo, step: Fraction | None
) -> Iterator[tuple[int, int, av.VideoFrame]]:
    """(index in the film, shot number, frame) of each keyframe among ``frames`` (a whole film, in order)."""
    lightness = _SmallLightness(info)
    previous: torch.Tensor | None = None
    shot = -1
    last_time = Fraction(0)  # of the last keyframe (there is one from the first frame on)
    for index, frame in enumerate(frames):
        current = lightness(frame)
        cut = bool(detect_cuts(current, previous)[-1])  # always True for the first frame
        previous = current
        time = frame_time(frame)
        if cut:
            shot += 1
        elif step is None or time - last_time < step:
            continue
        last_time = time
        yield index, shot, frame


class _SmallLightness:
    """A frame's Lab lightness at a small size, (1, 1, h, w), from its luma as the colorizer reads it.

    The frame is scaled down (area average) in the planar Y'CbCr format the colorizer
    works in, with the video's own matrix and range, so Y' is never converted, then its
    Y' plane becomes L with :func:`colorvid.color.luma_to_lightness`, through a table of
    every code value.
    """

    def __init__(self, info: VideoInfo):
        scale = min(1.0, CUT_SHORT_SIDE / min(info.width, info.height))
        self.width = max(1, round(info.width * scale))
        self.height = max(1, round(info.height * scale))
        self.format = work_format(info.pix_fmt, info.bit_depth)
        self.bit_depth = WORK_FORMATS[self.format][0]
        self.dtype = np.dtype(np.uint16 if self.bit_depth > 8 else np.uint8)
        codes = torch.arange(1 << self.bit_depth, dtype=torch.float32)
        self._lightness = luma_to_lightness(codes, self.bit_depth, info.full_range).numpy()
        self.colorspace = Colorspace[info.sws_colorspace]  # the scaler's stubs take the enum, not the name
        self.color_range = info.sws_color_range
        # One scaler for every frame: VideoFrame.reformat would set up a new one for each (~1 ms).
        self._reformatter = VideoReformatter()

    def __call__(self, frame: av.VideoFrame) -> torch.Tensor:
        small = self._reformatter.reformat(
            frame, width=self.width, height=self.height, format=self.format, interpolation="AREA", threads=1,
            src_colorspace=self.colorspace, dst_colorspace=self.colorspace,
            src_color_range=self.color_range, dst_color_range=self.color_range,
        )
        plane = small.planes[0]
        # Through a memoryview: numpy's stubs for Python < 3.12 accept only built-in buffer types.
        rows = np.frombuffer(memoryview(plane), dtype=self.dtype)
        rows = rows.reshape(plane.height, plane.line_size // self.dtype.itemsize)
        codes = np.minimum(rows[:, : plane.width], len(self._lightness) - 1)  # a deep frame's stray high bits
        return torch.from_numpy(self._lightness[codes])[None, None]


# --- reading a painted keyframe folder -------------------------------------------------------------

# A painted keyframe's file name: NNNNNN is the 1-based frame number, as frame_file_name writes it.
KEYFRAME_NAME = re.compile(r"frame_(\d+)\.(png|jpe?g|tiff?)", re.IGNORECASE)


class KeyframeSet:
    """A folder of keyframes for one film: ``frame_NNNNNN.<png|jpg|tif>``, NNNNNN the 1-based frame number.

    Frame numbers become timestamps through the folder's ``manifest.json`` where
    it lists them (``keyframes extract`` and ``frames extract`` write one), else by
    counting the film's frames in presentation order (its packets' timestamps,
    read without decoding). Images are read when their frame comes.
    """

    def __init__(self, folder: Path, files: dict[int, Path], pts_of: dict[int, int]):
        self.folder = folder
        self.files = files  # frame number -> image file
        self.pts_of = pts_of  # frame number -> pts
        self._by_pts = {pts: number for number, pts in pts_of.items()}

    @classmethod
    def from_folder(cls, folder: str | os.PathLike, film: str | os.PathLike) -> KeyframeSet:
        """The keyframes in ``folder`` for the film ``film``.

        Raises:
            InputError: no such folder, no keyframe in it, two images of one frame, or a
                frame number the film does not have.
        """
        folder = Path(folder)
        if not folder.is_dir():
            raise InputError(f"{folder}: no such keyframes folder")
        files: dict[int, Path] = {}
        for path in sorted(folder.iterdir()):
            match = KEYFRAME_NAME.fullmatch(path.name)
            if match is None or not path.is_file():
                continue
            number = int(match.group(1))
            if number < 1:
                raise InputError(f"{path}: frame numbers start at 1")
            if number in files:
                raise InputError(f"{path}: a second image of frame {number} (also {files[number].name})")
            files[number] = path
        if not files:
            raise InputError(f"{folder}: no keyframes (images named frame_NNNNNN.png, .jpg or .tif)")
        pts_of = _manifest_pts(folder)
        missing = [n for n in files if n not in pts_of]
        if missing:
            film_pts = presentation_pts(film)
            for number in missing:
                if number > len(film_pts):
                    raise InputError(f"{files[number]}: {Path(film).name} has {len(film_pts)} frames, not {number}")
                pts_of[number] = film_pts[number - 1]
        return cls(folder, files, {n: pts_of[n] for n in files})

    def __len__(self) -> int:
        return len(self.files)

    def at(self, pts: int | None) -> int | None:
        """The frame number of the keyframe shown at ``pts``, else None."""
        return None if pts is None else self._by_pts.get(pts)

    def image(self, number: int) -> torch.Tensor:
        """Keyframe ``number`` as RGB (3, H, W) in 0..1.

        Raises:
            InputError: the image cannot be read.
        """
        import numpy as np
        from PIL import Image

        path = self.files[number]
        try:
            with Image.open(path) as im:
                rgb = np.asarray(im.convert("RGB"))
        except OSError as exc:
            raise InputError(f"{path}: not a readable image ({exc})") from None
        return torch.from_numpy(rgb.copy()).permute(2, 0, 1).float() / 255.0

    def images(self) -> Sequence[torch.Tensor]:
        """The keyframes' images in frame order, each read when it is asked for (see :meth:`image`)."""
        return _Images(self, sorted(self.files))

    def shown(self, frames: Iterable[av.VideoFrame], to_end: bool = False
              ) -> Generator[tuple[av.VideoFrame, torch.Tensor | None]]:
        """Each frame with its keyframe's image or None, up to the last keyframe (frames in
        presentation order), or to the end."""
        last = max(self._by_pts)
        for frame in frames:
            if not to_end and frame.pts is not None and frame.pts > last:
                return
            number = self.at(frame.pts)
            yield frame, None if number is None else self.image(number)

    def latest_at_or_before(self, pts: int) -> int | None:
        """The pts of the last keyframe shown at or before ``pts``, else None."""
        keys = sorted(self._by_pts)
        i = bisect.bisect_right(keys, pts)
        return keys[i - 1] if i else None

    def digest(self) -> str:
        """sha256 of the frame numbers, timestamps and image bytes: what a resumed run must find again."""
        digest = hashlib.sha256()
        for number in sorted(self.files):
            digest.update(f"{number}:{self.pts_of[number]}:".encode())
            digest.update(hashlib.sha256(self.files[number].read_bytes()).digest())
        return digest.hexdigest()


class _Images(Sequence):
    """A KeyframeSet's images, read one at a time: a folder may hold hundreds of full-size frames."""

    def __init__(self, keyframes: KeyframeSet, numbers: list[int]):
        self._keyframes = keyframes
        self._numbers = numbers

    def __len__(self) -> int:
        return len(self._numbers)

    def __getitem__(self, index):  # an int, or a slice (a list of images)
        if isinstance(index, slice):
            return [self._keyframes.image(number) for number in self._numbers[index]]
        return self._keyframes.image(self._numbers[index])


def _manifest_pts(folder: Path) -> dict[int, int]:
    """Frame number -> pts of the frames a folder's manifest lists (none without a manifest)."""
    path = folder / MANIFEST_NAME
    if not path.is_file():
        return {}
    try:
        frames = json.loads(path.read_text(encoding="utf-8"))["frames"]
        found = {}
        for entry in frames:
            match = KEYFRAME_NAME.fullmatch(os.path.basename(entry["file"]))
            if match is not None and isinstance(entry.get("pts"), int):
                found[int(match.group(1))] = entry["pts"]
        return found
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{path}: not a valid colorvid manifest ({exc})") from None


def presentation_pts(film: str | os.PathLike) -> list[int]:
    """The film's video frames' timestamps in presentation order, from its packets (no decoding).

    Raises:
        InputError: the film cannot be read, or its packets carry no timestamps.
    """
    import av
    import av.error

    from colorvid.io.probe import ffmpeg_reason, video_stream

    path = os.fspath(film)
    try:
        with av.open(path) as container:
            stream = video_stream(container, path)
            pts = [packet.pts for packet in container.demux(stream) if packet.size and packet.pts is not None]
    except av.error.FFmpegError as exc:
        raise InputError(f"{path}: not a readable media file ({ffmpeg_reason(exc)})") from None
    if not pts:
        raise InputError(f"{path}: its packets have no timestamps; keyframes need the manifest of 'keyframes extract'")
    return sorted(pts)
