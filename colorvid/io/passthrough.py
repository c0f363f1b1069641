"""Carrying the other streams of a source into an output: audio, subtitles, attachments,
extra video streams. Copied packet for packet where the container takes the codec,
transcoded otherwise."""

from __future__ import annotations

import logging
import math
from fractions import Fraction

import av
import av.container
import av.error
import av.stream
import av.subtitles.subtitle
from av.subtitles.stream import SubtitleStream

from colorvid.io.formats import Container
from colorvid.io.probe import (
    ffmpeg_reason,
    is_cover_art,
    kept_tags,
    open_input,
    pts_seconds,
)

log = logging.getLogger(__name__)

_ASS_HEADER = b"""[Script Info]
ScriptType: v4.00+
PlayResX: 384
PlayResY: 288

[V4+ Styles]
Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, BackColour, Bold, Italic, Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, BorderStyle, Outline, Shadow, Alignment, MarginL, MarginR, MarginV, Encoding
Style: Default,Arial,16,&Hffffff,&Hffffff,&H0,&H0,0,0,0,0,100,100,0,0,1,1,0,2,10,10,10,0

[Events]
Format: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text
"""  # noqa: E501 (each ASS Format line lists its fields on one line)
_MICROSECOND = Fraction(1, 1_000_000)  # AVSubtitle.pts unit
_MILLISECOND = Fraction(1, 1000)  # AVSubtitle display time unit


class Passthrough:
    """Carries the other streams of a source file into an output: audio, subtitles,
    attachments, and video streams besides the one colorized (second angles, cover art).

    A second demuxer reads the source alongside the video so packets can be
    muxed in time order with the video frames (``mux_until``). Each stream is
    copied packet for packet if the output container takes its codec,
    otherwise transcoded (audio to the container's audio codec, text
    subtitles to its subtitle codec), otherwise dropped with a warning
    (extra video is only ever copied).
    """

    def __init__(self, source: str, output: av.container.OutputContainer, container: Container):
        self.source = source
        self._input = open_input(source)
        self._output = output
        # Source stream index -> output stream(s), for each stream carried over.
        self._copied: dict[int, av.stream.Stream] = {}
        self._audio: dict[int, tuple[av.AudioStream, av.AudioStream]] = {}  # transcoded: (source, output)
        self._subtitles: dict[int, tuple[SubtitleStream, SubtitleStream]] = {}  # transcoded: (source, output)
        self._pending: av.Packet | None = None
        self._done = False
        self._main_video = next((s for s in self._input.streams.video if not is_cover_art(s)), None)
        try:
            supported = output.supported_codecs
            for stream in self._input.streams:
                self._add_route(stream, container, supported)
            carried = sorted({*self._copied, *self._audio, *self._subtitles})
            streams = [self._input.streams[i] for i in carried if self._input.streams[i].type != "attachment"]
            self._packets = self._input.demux(streams) if streams else iter(())
        except BaseException:
            self.close()
            raise

    def _add_route(self, stream: av.stream.Stream, container: Container, supported: set[str]) -> None:
        kind = stream.type
        if kind == "attachment":
            if container.attachments:
                out = self._output.add_stream_from_template(stream)
                self._copied[stream.index] = out
            else:
                log.warning(
                    "%s: attachment stream #%d dropped (the output format cannot hold it)", self.source, stream.index
                )
            return
        if kind == "video" and stream is self._main_video:
            return  # that is the one being colorized
        if kind not in ("audio", "subtitle", "video"):
            return
        name = stream.codec_context.codec.canonical_name
        allowed = {"audio": container.copy_audio, "subtitle": container.copy_subtitles,
                   "video": container.copy_video}[kind]
        copyable = name in allowed if allowed is not None else name in supported
        out, route = None, "copy"
        if copyable:
            try:
                out = self._output.add_stream_from_template(stream)
            except ValueError:  # the muxer refuses it after all
                out = None
        if out is None and kind == "video":
            what = "cover art" if is_cover_art(stream) else "video"
            log.warning(
                "%s: %s stream #%d (%s) not carried over: the output format cannot hold it",
                self.source, what, stream.index, name,
            )
            return
        if out is not None:
            self._copied[stream.index] = out
        else:
            route = kind  # transcode
            if isinstance(stream, av.AudioStream):
                out = self._add_audio_encoder(stream, container.audio_codec)
                self._audio[stream.index] = (stream, out)
            elif isinstance(stream, SubtitleStream):
                out = self._add_subtitle_encoder(stream, container.subtitle_codec)
                if out is not None:
                    self._subtitles[stream.index] = (stream, out)
        if out is None:
            return
        out.metadata.update(kept_tags(stream.metadata))
        out.disposition = stream.disposition
        log.debug("%s: stream #%d (%s %s): %s", self.source, stream.index, kind, name, route)

    def _add_audio_encoder(self, stream: av.AudioStream, codec: str) -> av.AudioStream:
        rates = av.Codec(codec, "w").audio_rates
        rate = stream.rate
        if rates and rate not in rates:
            rate = 48000 if 48000 in rates else max(rates)
        channels = stream.codec_context.channels
        # Name the layout: encoders refuse an unnamed "N channels" layout.
        layout = {1: "mono", 2: "stereo"}.get(channels, stream.codec_context.layout.name)
        out = self._output.add_stream(codec, rate=rate, layout=layout)
        assert isinstance(out, av.AudioStream), f"{codec} is an audio encoder"
        return out

    def _add_subtitle_encoder(self, stream: SubtitleStream, codec: str | None) -> SubtitleStream | None:
        name = stream.codec_context.codec.canonical_name
        is_text = stream.codec_context.codec.text_sub
        if codec is None or not is_text:
            what = "text" if is_text else "bitmap"
            log.warning(
                "%s: %s subtitle stream #%d (%s) dropped: the output format cannot hold it",
                self.source, what, stream.index, name,
            )
            return None
        stream.codec_context.open()  # the decoder provides the ASS header the encoder needs
        out = self._output.add_stream(codec)
        assert isinstance(out, SubtitleStream), f"{codec} is a subtitle encoder"
        out.codec_context.time_base = _MILLISECOND
        out.codec_context.subtitle_header = stream.codec_context.subtitle_header or _ASS_HEADER
        return out

    def mux_until(self, seconds: float) -> None:
        """Mux source packets whose time is at most ``seconds``."""
        while not self._done:
            if self._pending is None:
                try:
                    self._pending = next(self._packets)
                except StopIteration:
                    self._done = True
                    return
                except av.error.FFmpegError as exc:
                    log.warning("%s: cannot read audio/subtitles past this point (%s)", self.source, ffmpeg_reason(exc))
                    self._done = True
                    return
            packet = self._pending
            if packet.size == 0:  # demuxer flush packet
                self._pending = None
                continue
            at = pts_seconds(packet.pts if packet.pts is not None else packet.dts, packet.time_base)
            if at is not None and at > seconds:
                return
            self._pending = None
            self._mux_packet(packet)

    def _mux_packet(self, packet: av.Packet) -> None:
        index = packet.stream_index
        if index in self._copied:
            packet.stream = self._copied[index]
            self._output.mux(packet)
        elif index in self._audio:
            source_stream, out = self._audio[index]
            try:
                frames = source_stream.decode(packet)
            except av.error.FFmpegError as exc:
                self._skip_damaged(packet, source_stream, exc)
                return
            for frame in frames:
                self._output.mux(out.encode(frame))
        else:
            source_stream, out = self._subtitles[index]
            try:
                subtitle = source_stream.codec_context.decode2(packet)
            except av.error.FFmpegError as exc:
                self._skip_damaged(packet, source_stream, exc)
                return
            if subtitle is not None and len(subtitle):
                self._mux_subtitle(subtitle, out)

    def _skip_damaged(self, packet: av.Packet, stream: av.stream.Stream, exc: av.error.FFmpegError) -> None:
        at = pts_seconds(packet.pts, packet.time_base)
        log.warning("%s: skipped a damaged %s packet at %s s (%s)", self.source, stream.type, at, ffmpeg_reason(exc))

    def _mux_subtitle(self, subtitle: av.subtitles.subtitle.SubtitleSet, out: SubtitleStream) -> None:
        # As ffmpeg does: move the display start into pts, encode, and time the packet.
        start = subtitle.pts * _MICROSECOND + subtitle.start_display_time * _MILLISECOND
        duration = (subtitle.end_display_time - subtitle.start_display_time) * _MILLISECOND
        subtitle.end_display_time -= subtitle.start_display_time
        subtitle.start_display_time = 0
        packet = out.codec_context.encode_subtitle(subtitle)
        packet.stream = out
        packet.time_base = _MICROSECOND  # mux() rescales to the stream's time base
        packet.pts = packet.dts = round(start / _MICROSECOND)
        packet.duration = round(duration / _MICROSECOND)
        self._output.mux(packet)

    def finish(self) -> None:
        """Mux everything left and flush the audio encoders."""
        self.mux_until(math.inf)
        for source_stream, out in self._audio.values():
            try:
                frames = source_stream.decode(None)
            except av.error.FFmpegError:
                frames = []
            for frame in frames:
                self._output.mux(out.encode(frame))
            self._output.mux(out.encode())

    def close(self) -> None:
        self._input.close()
