"""Writing: :class:`VideoWriter` encodes frames into a file that appears only when complete,
and :class:`PacketEncoder` encodes exactly as the writer would, for muxing later.

Timestamps are never recomputed from a frame rate: every frame keeps its pts
(variable frame rate survives). The output keeps the input's color tags,
rotation and metadata; the other streams of the source are carried over by
:mod:`colorvid.io.passthrough`.
"""

from __future__ import annotations

import errno
import io
import logging
import os
from contextlib import contextmanager

import av
import av.container
import av.error
import av.video.frame
from av.video.reformatter import Colorspace, VideoReformatter

from colorvid import atomic
from colorvid.color import sws_color_range, sws_colorspace
from colorvid.errors import OutputError
from colorvid.io.formats import (
    CONTAINERS,
    MUXERS,
    EncodeOptions,
    Encoding,
    check_output,
    choose_encoding,
    extension,
)
from colorvid.io.passthrough import Passthrough
from colorvid.io.probe import (
    COLOR_UNSPECIFIED,
    MATRIX_OF_COLORSPACE,
    RANGE_FULL,
    RANGE_LIMITED,
    VideoInfo,
    ffmpeg_reason,
)

log = logging.getLogger(__name__)

# Tags written for a matrix when the input had none: (primaries, transfer, colorspace).
_TAGS_OF_MATRIX = {"bt709": (1, 1, 1), "bt601": (6, 6, 6), "bt2020": (9, 14, 9)}
_FIELD_PROGRESSIVE = 1  # AVFieldOrder
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
        if isinstance(exc, av.error.FFmpegError) or exc.errno is not None:
            raise OutputError(f"{path}: cannot write ({ffmpeg_reason(exc)})") from None
        raise


def _add_video_stream(
    container: av.container.OutputContainer, info: VideoInfo, encoding: Encoding, progressive: bool
) -> av.VideoStream:
    """The output video stream with its encoder configured (not opened): codec, time base, tags."""
    stream = container.add_stream(
        encoding.codec, rate=encoding.rate, width=info.width, height=info.height, pix_fmt=encoding.pix_fmt,
        options=encoding.options,
    )
    assert isinstance(stream, av.VideoStream), f"{encoding.codec} is a video encoder"
    stream.time_base = encoding.time_base
    ctx = stream.codec_context
    ctx.time_base = encoding.time_base
    default_tags = _TAGS_OF_MATRIX[info.matrix]
    ctx.color_primaries = info.color_primaries if info.color_primaries != COLOR_UNSPECIFIED else default_tags[0]
    ctx.color_trc = info.color_trc if info.color_trc != COLOR_UNSPECIFIED else default_tags[1]
    ctx.colorspace = info.colorspace if info.colorspace in MATRIX_OF_COLORSPACE else default_tags[2]
    ctx.color_range = RANGE_FULL if encoding.full_range else RANGE_LIMITED
    if progressive:
        ctx.field_order = _FIELD_PROGRESSIVE
    if info.display_matrix is not None:
        stream.set_display_matrix(info.display_matrix)
    elif info.rotation:
        stream.set_display_rotation(-info.rotation)  # PyAV takes counter-clockwise degrees
    stream.metadata.update(info.stream_metadata)
    return stream


def _open_encoder(stream: av.VideoStream, path: str, info: VideoInfo, encoding: Encoding) -> None:
    """Open now, so a codec that refuses the settings fails before any frame is decoded."""
    try:
        stream.codec_context.open()
    except av.error.FFmpegError as exc:
        raise OutputError(
            f"{path}: {encoding.codec} refuses {encoding.pix_fmt} at {info.width}x{info.height} ({ffmpeg_reason(exc)})"
        ) from None


class _FrameEncoder:
    """Frames to packets with an opened output stream's encoder: format conversion and timestamps.

    Each frame keeps its pts (rescaled to the encoder's time base); a pts that
    does not increase is moved one tick past the previous one (encoders refuse
    it), counted in ``bumped``. ``last_pts`` continues the count from earlier
    frames encoded elsewhere (the previous piece of a chunked run).
    """

    def __init__(self, stream: av.VideoStream, info: VideoInfo, encoding: Encoding, last_pts: int | None = None):
        self.stream = stream
        self.info = info
        self.pix_fmt = encoding.pix_fmt
        self.matrix = info.matrix  # the output's Y'CbCr: the input's matrix, in the encoding's range
        self.full_range = encoding.full_range
        self.time_base = encoding.time_base
        self.last_pts = last_pts
        self.bumped = 0
        self._reformatter = VideoReformatter()  # one scaler for every frame, not one per frame

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
        src_colorspace, src_range = sws_colorspace(self.matrix), sws_color_range(self.full_range)
        if name.startswith("yuv"):
            matrix = MATRIX_OF_COLORSPACE.get(int(frame.colorspace))
            if matrix:
                src_colorspace = sws_colorspace(matrix)
            if name.startswith("yuvj") or int(frame.color_range) == RANGE_FULL:
                src_range = "JPEG"
            elif int(frame.color_range) == RANGE_LIMITED:
                src_range = "MPEG"
        return self._reformatter.reformat(
            frame,
            format=self.pix_fmt,
            src_colorspace=Colorspace[src_colorspace],  # the scaler's stubs take the enum, not the name
            dst_colorspace=Colorspace[sws_colorspace(self.matrix)],
            src_color_range=src_range,
            dst_color_range=sws_color_range(self.full_range),
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
        encoding = choose_encoding(path, info, options)
        self.codec = encoding.codec
        self._container = av.open(io.BytesIO(), "w", format=MUXERS[extension(path)])
        try:
            stream = _add_video_stream(self._container, info, encoding, options.progressive)
            _open_encoder(stream, path, info, encoding)
        except BaseException:
            self.close()
            raise
        self._encoder = _FrameEncoder(stream, info, encoding, last_pts)
        self.pix_fmt = encoding.pix_fmt
        self.matrix = self._encoder.matrix
        self.full_range = self._encoder.full_range
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

    Frames should be in ``writer.pix_fmt``, with ``writer.matrix``
    and ``writer.full_range`` (the input's matrix and range; MJPEG is
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
        encoding = choose_encoding(self.path, info, options)
        self.codec = encoding.codec
        self.pix_fmt = encoding.pix_fmt
        self.matrix = info.matrix
        self.full_range = encoding.full_range
        self.frames_written = 0
        self._time_base = encoding.time_base
        self._passthrough: Passthrough | None = None
        self._container: av.container.OutputContainer | None = None
        self._temp_path = self._create_temp_file()
        try:
            with _output_errors(self.path):
                container = CONTAINERS[extension(self.path)]
                mux_options = {"avoid_negative_ts": "disabled"} if container.keep_negative_ts else {}
                self._container = av.open(self._temp_path, "w", options=mux_options)
                self._container.metadata.update(info.container_metadata)
                self._stream = _add_video_stream(self._container, info, encoding, options.progressive)
                if passthrough_source is not None:
                    self._passthrough = Passthrough(passthrough_source, self._container, container)
                _open_encoder(self._stream, self.path, info, encoding)
                if extradata is not None:
                    self._stream.codec_context.extradata = extradata or None
                self._encoder = _FrameEncoder(self._stream, info, encoding)
        except BaseException:
            self._discard()
            raise

    def _create_temp_file(self) -> str:
        folder = os.path.dirname(os.path.abspath(self.path))
        try:
            return os.fspath(atomic.create_temp(os.path.abspath(self.path)))
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
                atomic.commit(self._temp_path, self.path)
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
            assert pts is not None, "encode() has just set it"
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
        assert self._container is not None, "opened in __init__ (None only while __init__ fails)"
        self._container.mux(packets)

    def _finish(self) -> None:
        assert self._container is not None, "opened in __init__ (None only while __init__ fails)"
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
