"""Resumable and parallel runs: a film encoded in independent chunks, remuxed at the end.

A colorize run does not encode straight into its output. The colorized
frames are encoded, with the output's own codec and settings, into chunks of
a few seconds; each chunk has a fresh encoder, so it starts with a keyframe
and needs no other chunk to decode. A chunk's packets go to a file in a work
folder beside the output, which is renamed into place and recorded in
``state.json`` (written atomically) only once the chunk is complete. When
every chunk is there, their packets are muxed into the output, without
re-encoding, together with the source's audio, subtitles and other streams
(:class:`~colorvid.io.VideoWriter` in packet mode), and the work folder
is removed.

So a run stopped in any way (Ctrl-C, SIGTERM, SIGKILL, power loss) leaves
the chunks it finished and at most a partial chunk file, which is ignored;
``--resume`` continues after the last complete chunk.

The same folders make parallel runs possible: a *part* is a work folder that
holds the chunks of one time range of the film (``--segment I/N`` or
``--range``); it is kept when complete, and :func:`join` muxes the parts of a
film into one file.

Work folder layout::

    state.json           what the run is (source, settings) and the chunks done
    chunk_000000.pkt     packets of chunk 0 (format below)
    chunk_000001.pkt
    lock                 flock()ed while a process works in the folder

A chunk file is ``CHUNK_MAGIC`` followed by one record per packet, in
decoding order: pts, dts, duration (int64, the encoder's time base;
``_NO_TS`` for none), size (uint32) and flags (uint8: 1 = keyframe), then the packet's
bytes. The codec header (``extradata``) is in the state.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import math
import os
import shutil
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import av

from colorvid import atomic
from colorvid.errors import InputError, OutputError
from colorvid.io import (
    EncodeOptions,
    PacketEncoder,
    VideoInfo,
    VideoWriter,
    check_output,
    frame_time,
)
from colorvid.ranges import FrameRange

log = logging.getLogger("colorvid")

STATE_NAME = "state.json"
STATE_VERSION = 1
CHUNK_MAGIC = b"colorvid-packets-1\n"
CHUNK_SECONDS = 4.0  # default chunk length: at most this much encoding is redone on resume
_RECORD = struct.Struct("<qqqIB")  # pts, dts, duration, size, flags
_NO_TS = -(2**63)
_KEYFRAME = 1
_SOURCE_SAMPLE = 1 << 20  # bytes hashed at each end of the source to recognize it


# --- work folders -----------------------------------------------------------


def work_folder_for(output: Path) -> Path:
    """Where a run writing ``output`` keeps its chunks: a hidden folder beside it."""
    return output.parent / f".{output.name}.colorvid-work"


def part_folder_for(output: Path, frames: FrameRange) -> Path:
    """Where a run of one part of ``output`` keeps its chunks (kept for ``join``)."""
    return output.parent / f"{output.name}.{frames.label}"


def finished_part_exists(folder: Path) -> bool:
    """Is there a complete part in ``folder``? (No lock taken: a quick look.)"""
    try:
        with open(folder / STATE_NAME, encoding="utf-8") as handle:
            return bool(json.load(handle).get("complete"))
    except (OSError, ValueError):
        return False


def source_identity(path: str | os.PathLike) -> dict:
    """Size and a hash of both ends: recognizes the same film after a copy (mtime changes)."""
    size = os.path.getsize(path)
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        digest.update(handle.read(_SOURCE_SAMPLE))
        if size > _SOURCE_SAMPLE:
            handle.seek(max(_SOURCE_SAMPLE, size - _SOURCE_SAMPLE))
            digest.update(handle.read(_SOURCE_SAMPLE))
    return {"size": size, "sha256_ends": digest.hexdigest()}


@contextmanager
def _written(path: Path):
    """Turn OSError while writing into OutputError naming ``path``."""
    try:
        yield
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise OutputError(f"{path}: disk full") from None
        raise OutputError(f"{path}: cannot write ({exc.strerror or exc})") from None


def _write_json_atomic(path: Path, data: dict) -> None:
    with _written(path):
        atomic.write_text(path, json.dumps(data, indent=1))


class WorkFolder:
    """A folder of chunks and its state, locked by this process while open.

    ``state`` is the parsed ``state.json``: ``source``/``source_id``,
    ``settings`` (everything that changes the output; resuming with other
    settings is refused), ``info`` (the source's VideoInfo), ``range``,
    ``output_ext``, ``encoder`` (codec, time base, extradata) once the first
    chunk exists, ``chunks`` and ``complete``.
    """

    def __init__(self, path: Path, state: dict, lock_fd: int):
        self.path = path
        self.state = state
        self._lock_fd = lock_fd

    # opening

    @classmethod
    def open(cls, path: Path, fresh_state: dict, *, resume: bool, restart: bool, output: Path) -> WorkFolder:
        """Open or create the work folder at ``path`` for a run described by ``fresh_state``.

        An existing folder with complete chunks is continued with ``resume``
        (its settings and source must match), started over with ``restart``,
        and otherwise refused.

        Raises:
            OutputError: the folder cannot be made, is in use by another run,
                or holds work that may not be continued or discarded.
        """
        existed = path.exists()
        with _written(path):
            try:
                path.mkdir(exist_ok=True)
            except FileExistsError:
                raise OutputError(f"{path}: exists and is not a folder") from None
            except PermissionError:
                raise OutputError(f"{output}: folder {path.parent} is not writable") from None
        try:
            lock_fd = cls._lock(path)
        except BaseException:
            if not existed:
                shutil.rmtree(path, ignore_errors=True)
            raise
        folder = cls(path, fresh_state, lock_fd)
        try:
            folder._clean_partial_files()
            old = folder._read_state()
            if old is not None and (old.get("chunks") or old.get("complete")):
                if restart:
                    log.info("%s: discarding the earlier run's work (%d chunks)", path, len(old["chunks"]))
                elif not resume:
                    raise OutputError(
                        f"{output}: an earlier run stopped before finishing and left its work in {path}; "
                        f"add --resume to continue it, or --overwrite to start over"
                    )
                else:
                    folder._check_same_run(old, fresh_state, output)
                    folder.state = old
                    folder._drop_unusable_chunks()
            if folder.state is fresh_state:
                folder._remove_chunk_files()
                folder.save()
        except BaseException:
            folder.close()
            if not existed:
                shutil.rmtree(path, ignore_errors=True)
            raise
        return folder

    @classmethod
    def open_part(cls, path: Path) -> WorkFolder:
        """Open a finished part for joining (locked, read only).

        Raises:
            OutputError: not a colorvid part, in use, or not finished.
        """
        if not (path / STATE_NAME).is_file():
            raise OutputError(f"{path}: not a part written by colorvid colorize --segment/--range")
        folder = cls(path, {}, cls._lock(path))
        try:
            state = folder._read_state()
            if state is None:
                raise OutputError(f"{path}: its {STATE_NAME} cannot be read")
            folder.state = state
            if not state.get("complete"):
                raise OutputError(f"{path}: this part is not finished (run its colorize command again with --resume)")
            folder._check_chunk_files()
        except BaseException:
            folder.close()
            raise
        return folder

    @staticmethod
    def _lock(path: Path) -> int:
        lock_path = path / "lock"
        with _written(lock_path):
            try:
                fd = os.open(lock_path, os.O_CREAT | os.O_RDWR, 0o666)
            except PermissionError:
                raise OutputError(f"{path.parent}: folder is not writable (cannot create {lock_path})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise OutputError(f"{path}: another colorvid process is working in this folder") from None
        return fd

    def _read_state(self) -> dict | None:
        try:
            with open(self.path / STATE_NAME, encoding="utf-8") as handle:
                state = json.load(handle)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("%s: unreadable %s (%s); starting over", self.path, STATE_NAME, exc)
            return None
        if state.get("version") != STATE_VERSION:
            raise OutputError(f"{self.path}: made by another colorvid version; remove it to start over")
        return state

    def _check_same_run(self, old: dict, new: dict, output: Path) -> None:
        differences = []
        if old.get("source_id") != new.get("source_id"):
            differences.append(f"the source file ({old.get('source')}) is not the same file")
        for key in sorted(set(old.get("settings", {})) | set(new.get("settings", {}))):
            before, now = old.get("settings", {}).get(key), new.get("settings", {}).get(key)
            if before != now:
                differences.append(f"{key} was {before!r}, now {now!r}")
        if old.get("range") != new.get("range"):
            differences.append("the part of the film differs")
        if differences:
            raise OutputError(
                f"{output}: cannot resume the work in {self.path}: " + "; ".join(differences)
                + " (use --overwrite to start over)"
            )

    def _clean_partial_files(self) -> None:
        for entry in self.path.iterdir():
            if atomic.is_temporary(entry):
                entry.unlink(missing_ok=True)

    def _remove_chunk_files(self) -> None:
        for entry in self.path.iterdir():
            if entry.name.startswith("chunk_"):
                entry.unlink(missing_ok=True)

    def _drop_unusable_chunks(self) -> None:
        """Keep the chunks whose files are whole; the rest (and all after) are redone."""
        kept = []
        for chunk in self.state["chunks"]:
            file = self.path / chunk["file"]
            if not file.is_file() or file.stat().st_size != chunk["bytes"]:
                log.warning("%s: %s is missing or damaged; redoing from there", self.path, chunk["file"])
                self.state["complete"] = False
                break
            kept.append(chunk)
        self.state["chunks"] = kept
        listed = {c["file"] for c in kept}
        for entry in self.path.iterdir():
            if entry.name.startswith("chunk_") and entry.name not in listed:
                entry.unlink(missing_ok=True)
        self.save()

    def _check_chunk_files(self) -> None:
        for chunk in self.state["chunks"]:
            file = self.path / chunk["file"]
            if not file.is_file() or file.stat().st_size != chunk["bytes"]:
                raise OutputError(f"{file}: missing or damaged (run the part again with --overwrite)")

    # state

    @property
    def chunks(self) -> list[dict]:
        return self.state["chunks"]

    @property
    def complete(self) -> bool:
        return bool(self.state.get("complete"))

    @property
    def frames(self) -> int:
        return sum(chunk["frames"] for chunk in self.chunks)

    @property
    def frame_range(self) -> FrameRange:
        return FrameRange.from_dict(self.state["range"])

    def save(self) -> None:
        _write_json_atomic(self.path / STATE_NAME, self.state)

    # closing

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def remove(self) -> None:
        self.close()
        shutil.rmtree(self.path, ignore_errors=True)


def new_state(source: Path, info: VideoInfo, settings: dict, frames: FrameRange, output: Path) -> dict:
    """The state of a run that has done nothing yet."""
    return {
        "version": STATE_VERSION,
        "source": os.path.abspath(source),
        "source_id": source_identity(source),
        "settings": settings,
        "info": info.to_dict(),
        "range": frames.to_dict(),
        "output_ext": output.suffix.lower(),
        "encoder": None,
        "chunks": [],
        "complete": False,
        "covers_end": False,
    }


def encode_options(state: dict, overwrite: bool = False) -> EncodeOptions:
    settings = state["settings"]
    return EncodeOptions(codec=settings["codec"], crf=settings["crf"], preset=settings["preset"],
                         pix_fmt=settings["pix_fmt"], overwrite=overwrite, progressive=bool(settings["deinterlace"]))


# --- chunk files ------------------------------------------------------------


def _write_record(handle, packet: av.Packet) -> int:
    data = bytes(packet)
    flags = _KEYFRAME if packet.is_keyframe else 0

    def ts(value):
        return _NO_TS if value is None else value

    handle.write(_RECORD.pack(ts(packet.pts), ts(packet.dts), ts(packet.duration), len(data), flags))
    handle.write(data)
    return _RECORD.size + len(data)


def read_packets(path: Path, time_base: Fraction) -> Iterator[av.Packet]:
    """The packets of a chunk file, in decoding order, with their timestamps in ``time_base``.

    Raises:
        OutputError: the file is not a whole chunk file.
    """
    with open(path, "rb") as handle:
        if handle.read(len(CHUNK_MAGIC)) != CHUNK_MAGIC:
            raise OutputError(f"{path}: not a colorvid chunk file")
        while header := handle.read(_RECORD.size):
            if len(header) < _RECORD.size:
                raise OutputError(f"{path}: cut short")
            pts, dts, duration, size, flags = _RECORD.unpack(header)
            data = handle.read(size)
            if len(data) < size:
                raise OutputError(f"{path}: cut short")
            packet = av.Packet(data)
            packet.time_base = time_base
            packet.pts = None if pts == _NO_TS else pts
            packet.dts = None if dts == _NO_TS else dts
            if duration != _NO_TS:
                packet.duration = duration
            packet.is_keyframe = bool(flags & _KEYFRAME)
            yield packet


class ChunkWriter:
    """Encodes frames into the chunks of a work folder (the encode stage of a run).

    A new chunk starts at the first frame ``chunk_seconds`` or more after the
    current chunk's first frame. Each chunk is written to a temporary file,
    synced, renamed, and then recorded in the state (synced too), so a chunk
    in the state is always whole. Frames must come in presentation order and
    after those of the chunks already in the folder.
    """

    def __init__(self, folder: WorkFolder, output: Path, chunk_seconds: float = CHUNK_SECONDS):
        self.folder = folder
        self.output = output
        self.chunk_seconds = Fraction(chunk_seconds)
        self.info = VideoInfo.from_dict(folder.state["info"])
        self.options = encode_options(folder.state)
        chunks = folder.chunks
        self._last_pts = chunks[-1]["out_last_pts"] if chunks else None
        self._encoder: PacketEncoder | None = None
        self._handle: BinaryIO | None = None
        self._temp: Path | None = None
        self._chunk: dict | None = None
        self._chunk_start: Fraction | None = None
        self.bumped = 0

    def write(self, frame: av.VideoFrame) -> None:
        at = frame_time(frame)
        start = self._chunk_start  # set with _chunk
        if self._chunk is not None and start is not None and at - start >= self.chunk_seconds:
            self._finish_chunk()
        if self._chunk is None:
            self._start_chunk(frame, at)
        chunk, encoder, _, temp = self._open_chunk()
        with _written(temp):
            packets = encoder.encode(frame)
            self._write(packets)
        chunk["frames"] += 1
        chunk["last_pts"] = frame.pts
        chunk["out_last_pts"] = encoder.last_pts

    def finish(self, covers_end: bool) -> None:
        """Complete the last chunk and mark the folder's work complete."""
        if self._chunk is not None:
            self._finish_chunk()
        self.folder.state["complete"] = True
        self.folder.state["covers_end"] = covers_end
        self.folder.save()
        if self.bumped:
            log.warning(
                "%s: %d frame(s) had a timestamp that did not increase; moved forward by one tick",
                self.output, self.bumped,
            )

    def abort(self) -> None:
        """Drop the chunk in progress (its frames are redone on resume)."""
        if self._encoder is not None:
            self._encoder.close()
            self._encoder = None
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        if self._temp is not None:
            self._temp.unlink(missing_ok=True)
            self._temp = None
        self._chunk = None

    def _start_chunk(self, frame: av.VideoFrame, at: Fraction) -> None:
        index = len(self.folder.chunks)
        name = f"chunk_{index:06d}.pkt"
        self._encoder = PacketEncoder(self.output, self.info, self.options, last_pts=self._last_pts)
        encoder_state = {
            "codec": self._encoder.codec,
            "time_base": str(self._encoder.time_base),
            "extradata": self._encoder.extradata.hex(),
        }
        if self.folder.state["encoder"] is None:
            self.folder.state["encoder"] = encoder_state
        elif self.folder.state["encoder"] != encoder_state:
            raise OutputError(f"{self.output}: the encoder's settings changed within the run")
        final = self.folder.path / name
        with _written(final):
            self._temp = atomic.create_temp(final)
            self._handle = open(self._temp, "wb")
            self._handle.write(CHUNK_MAGIC)
        self._chunk = {"file": name, "frames": 0, "first_pts": frame.pts, "last_pts": frame.pts,
                       "out_last_pts": None, "packets": 0, "bytes": len(CHUNK_MAGIC)}
        self._chunk_start = at

    def _open_chunk(self) -> tuple[dict, PacketEncoder, BinaryIO, Path]:
        """The chunk in progress: its record, encoder, file and temporary path (_start_chunk sets them all)."""
        chunk, encoder, handle, temp = self._chunk, self._encoder, self._handle, self._temp
        assert chunk is not None and encoder is not None and handle is not None and temp is not None, "no chunk open"
        return chunk, encoder, handle, temp

    def _write(self, packets: list[av.Packet]) -> None:
        chunk, _, handle, _ = self._open_chunk()
        for packet in packets:
            chunk["bytes"] += _write_record(handle, packet)
            chunk["packets"] += 1

    def _finish_chunk(self) -> None:
        chunk, encoder, handle, temp = self._open_chunk()
        final = self.folder.path / chunk["file"]
        with _written(temp):
            self._write(encoder.flush())
            handle.close()
            self._handle = None
            atomic.commit(temp, final)
        self._temp = None
        self.bumped += encoder.bumped
        encoder.close()
        self._encoder = None
        self._last_pts = chunk["out_last_pts"]
        self._chunk = None
        self.folder.chunks.append(chunk)
        self.folder.save()  # syncs the folder too, so the renamed chunk is durable first


# --- assembling -------------------------------------------------------------


def assemble(folders: list[WorkFolder], output: Path, source: Path, overwrite: bool) -> int:
    """Mux the chunks of ``folders`` (in order) into ``output`` with ``source``'s other streams.

    Returns the number of video frames written.

    Raises:
        OutputError: the folders do not fit together, or the output cannot be written.
        InputError: the source cannot be read.
    """
    first = folders[0].state
    info = replace(VideoInfo.from_dict(first["info"]), path=os.fspath(source))
    encoder = next((folder.state["encoder"] for folder in folders if folder.state["encoder"]), None)
    if encoder is None:
        raise OutputError(f"{output}: no frames to write")
    time_base = Fraction(encoder["time_base"])
    extradata = bytes.fromhex(encoder["extradata"])
    options = encode_options(first, overwrite)
    frames = 0
    last_dts: int | None = None
    with VideoWriter(output, info, options, passthrough_source=source, extradata=extradata) as writer:
        if writer.codec != encoder["codec"]:
            raise OutputError(f"{output}: the chunks hold {encoder['codec']}, this output would be {writer.codec}")
        for folder in folders:
            for chunk in folder.chunks:
                for packet in read_packets(folder.path / chunk["file"], time_base):
                    # Each chunk's encoder started afresh, with decoding times reaching back
                    # before its first frame; keep them increasing across the seam.
                    if packet.dts is not None and last_dts is not None and packet.dts <= last_dts:
                        packet.dts = last_dts + 1
                        if packet.pts is not None and packet.dts > packet.pts:
                            raise OutputError(
                                f"{output}: timestamps overlap where {chunk['file']} of {folder.path} starts"
                            )
                    if packet.dts is not None:
                        last_dts = packet.dts
                    writer.write_packet(packet)
                frames += chunk["frames"]
    return frames


def join(parts: list[Path], output: Path, source: Path | None = None, overwrite: bool = False,
         keep_parts: bool = False) -> int:
    """Join finished parts of one film into ``output`` (remux, no re-encoding).

    The parts must come from the same source with the same settings and
    together cover the whole film: the first from its start, each next one
    from where the previous one ends, the last to its end. Audio, subtitles
    and other streams come from ``source`` (default: the file the parts were
    made from, which must still be the same file). The parts are removed
    afterwards unless ``keep_parts``. Returns the number of video frames.

    Raises:
        OutputError: the parts do not make one film, or the output cannot be written.
        InputError: the source is missing or is not the film the parts were made from.
    """
    folders: list[WorkFolder] = []
    try:
        for path in parts:
            folders.append(WorkFolder.open_part(Path(path)))
        folders = _in_film_order(folders)
        first = folders[0].state
        source = Path(source) if source is not None else Path(first["source"])
        if not source.is_file():
            raise InputError(f"{source}: no such file (give the original film with --source)")
        if source_identity(source) != first["source_id"]:
            raise InputError(f"{source}: not the film the parts were made from")
        if output.suffix.lower() != first["output_ext"]:
            raise OutputError(f"{output}: the parts were encoded for {first['output_ext']} files")
        check_output(output, overwrite, source)
        frames = assemble(folders, output, source, overwrite)
    finally:
        for folder in folders:
            folder.close()
    if not keep_parts:
        for folder in folders:
            folder.remove()
    return frames


def _in_film_order(folders: list[WorkFolder]) -> list[WorkFolder]:
    """Sort parts by start and check they are one film's, each frame in exactly one part."""
    first = folders[0]
    for folder in folders[1:]:
        for key, what in (("source_id", "source film"), ("settings", "settings"), ("output_ext", "output format")):
            if folder.state.get(key) != first.state.get(key):
                raise OutputError(f"{folder.path}: made with another {what} than {first.path}")
        encoders = (folder.state["encoder"], first.state["encoder"])
        if all(encoders) and encoders[0] != encoders[1]:
            raise OutputError(f"{folder.path}: encoded differently from {first.path} (another encoder version?)")

    def start(folder: WorkFolder) -> float:
        value = folder.frame_range.start
        return -math.inf if value is None else value

    ordered = sorted(folders, key=start)
    previous: WorkFolder | None = None
    for folder in ordered:
        frames = folder.frame_range
        if previous is None:
            if frames.start is not None:
                raise OutputError(f"{folder.path}: the part that starts the film is missing")
        else:
            before = previous.frame_range
            if before.end is None or previous.state.get("covers_end"):
                raise OutputError(f"{folder.path}: overlaps {previous.path}, which goes to the end of the film")
            if frames.start != before.end:
                # a second part that also starts the film (start None) overlaps the first
                overlaps = frames.start is None or frames.start < before.end
                problem = "overlaps" if overlaps else "does not start where it ends"
                raise OutputError(f"{folder.path}: {problem} {previous.path}; a part is missing or doubled")
        previous = folder
    assert previous is not None, "folders is not empty"
    if not (previous.frame_range.end is None or previous.state.get("covers_end")):
        raise OutputError(f"{previous.path}: the part that ends the film is missing")
    if not any(folder.chunks for folder in ordered):
        raise OutputError(f"{ordered[0].path}: the parts hold no frames")
    return ordered
