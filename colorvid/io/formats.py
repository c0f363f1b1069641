"""The codec and container table: which files colorvid reads and writes, and how it encodes them.

Every suffix table lives here (video and image files colorvid takes as
input, containers it writes), so the pipeline, training and evaluation
agree on what a video file is.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction

import av

from colorvid.errors import OutputError
from colorvid.io.probe import VideoInfo

# Files colorvid takes as video input (folders are searched for these).
VIDEO_SUFFIXES = frozenset({
    ".mp4", ".m4v", ".mkv", ".mov", ".avi", ".webm", ".mpg", ".mpeg", ".ts", ".m2ts", ".mts", ".flv",
    ".wmv", ".asf", ".ogv", ".3gp", ".mxf", ".dv", ".vob", ".y4m", ".nut",
})
# Still images colorvid reads and writes.
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"})

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
class Container:
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


CONTAINERS = {
    ".mp4": Container(("libx264", "libvpx-vp9"), "aac", "mov_text"),
    ".mov": Container(("libx264", "mjpeg"), "aac", "mov_text"),
    ".mkv": Container(("libx264", "ffv1", "libvpx-vp9", "mjpeg"), "aac", "subrip", attachments=True),
    ".webm": Container(("libvpx-vp9",), "libopus", "webvtt"),
    ".avi": Container(
        ("mjpeg", "ffv1", "libx264"), "libmp3lame", None,
        copy_subtitles=frozenset(), frame_indexed=True, keep_negative_ts=True, copy_video=frozenset(),
    ),
    ".ts": Container(
        ("libx264", "mpeg2video"), "aac", None,
        copy_audio=frozenset({"aac", "mp3", "mp2", "ac3", "eac3"}),
        copy_subtitles=frozenset({"dvb_subtitle"}),
        keep_negative_ts=True, copy_video=frozenset(),
    ),
    ".mpg": Container(
        ("mpeg2video",), "mp2", None,
        copy_audio=frozenset({"mp2", "mp3", "ac3"}),
        copy_subtitles=frozenset({"dvd_subtitle"}),
        keep_negative_ts=True, copy_video=frozenset(),
    ),
}
# FFmpeg muxer of each extension (what av.open picks from the file name).
MUXERS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm", ".avi": "avi", ".ts": "mpegts",
           ".mpg": "mpeg"}

# Containers colorvid writes, in the order error messages list them.
OUTPUT_EXTENSIONS = tuple(CONTAINERS)
PIX_FMTS = ("yuv420p", "yuv422p", "yuv444p", "yuv420p10le", "yuv422p10le", "yuv444p10le")
X264_PRESETS = (
    "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo",
)
# libvpx-vp9 cpu-used for each x264 preset name (higher is faster).
_VP9_CPU_USED = dict(zip(X264_PRESETS, ("8", "7", "6", "5", "4", "3", "2", "1", "0", "0")))
# MPEG-2 only allows these frame rates.
_MPEG2_RATES = tuple(Fraction(r) for r in ("24000/1001", "24", "25", "30000/1001", "30", "50", "60000/1001", "60"))
_QSCALE = 3  # mjpeg/mpeg2video quantizer: 2 is best, 31 worst
_FF_QP2LAMBDA = 118


def extension(path: str) -> str:
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
    ext = extension(path)
    container = CONTAINERS.get(ext)
    if container is None:
        raise OutputError(
            f"{path}: unknown output extension {ext or '(none)'!r}; use one of {', '.join(OUTPUT_EXTENSIONS)}"
        )
    if codec is not None and codec not in container.video_codecs:
        choices = ", ".join(container.video_codecs)
        raise OutputError(f"{path}: codec {codec} cannot be used for {ext} files; use {choices}")
    if pix_fmt is not None:
        codec = codec or container.video_codecs[0]
        supported = pix_fmts_of(codec)
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


def pix_fmts_of(codec: str) -> set[str]:
    return {f.name for f in av.Codec(codec, "w").video_formats or ()}


@dataclass(frozen=True)
class Encoding:
    codec: str
    pix_fmt: str
    rate: Fraction
    time_base: Fraction  # of the encoder; frame pts are expressed in it
    full_range: bool
    options: dict[str, str]


def choose_encoding(path: str, info: VideoInfo, options: EncodeOptions) -> Encoding:
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
    container = CONTAINERS[extension(path)]
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
    if pix_fmt not in pix_fmts_of(codec):
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
    else:  # mjpeg, mpeg2video: a fixed quantizer
        opts = {"flags": "+qscale", "global_quality": str(_QSCALE * _FF_QP2LAMBDA)}
        if codec == "mpeg2video":
            rate = min(_MPEG2_RATES, key=lambda r: abs(r - rate))
    frame_indexed = container.frame_indexed or codec == "mpeg2video"
    time_base = 1 / rate if frame_indexed else info.time_base
    return Encoding(codec, pix_fmt, rate, time_base, info.full_range or pix_fmt.startswith("yuvj"), opts)
