"""Video input and output with PyAV, split by job:

- :mod:`~colorvid.io.probe`: what a file holds (:func:`probe`, :class:`VideoInfo`, :func:`timeline`);
- :mod:`~colorvid.io.reader`: decoding (:class:`VideoReader`, timestamp repair, seeking, deinterlacing);
- :mod:`~colorvid.io.formats`: the codec/container and file-suffix tables, :func:`check_output`;
- :mod:`~colorvid.io.writer`: encoding into a file that appears only when complete
  (:class:`VideoWriter`, :class:`PacketEncoder`);
- :mod:`~colorvid.io.passthrough`: carrying audio, subtitles and other streams over.
"""

from colorvid.io.formats import (
    IMAGE_SUFFIXES,
    OUTPUT_EXTENSIONS,
    PIX_FMTS,
    VIDEO_SUFFIXES,
    X264_PRESETS,
    EncodeOptions,
    check_output,
)
from colorvid.io.probe import VideoInfo, count_packets, probe, timeline
from colorvid.io.reader import DEINTERLACERS, VideoReader, deinterlaced, frame_pts, frame_time
from colorvid.io.writer import PacketEncoder, VideoWriter

__all__ = [
    "DEINTERLACERS",
    "IMAGE_SUFFIXES",
    "OUTPUT_EXTENSIONS",
    "PIX_FMTS",
    "VIDEO_SUFFIXES",
    "X264_PRESETS",
    "EncodeOptions",
    "PacketEncoder",
    "VideoInfo",
    "VideoReader",
    "VideoWriter",
    "check_output",
    "count_packets",
    "deinterlaced",
    "frame_pts",
    "frame_time",
    "probe",
    "timeline",
]
