"""Colorizing files: inputs to outputs, one model, decode/infer/encode overlapped.

A video goes through three stages joined by bounded queues: a thread decodes
and batches frames, the calling thread runs the network, and a thread
encodes them into chunks of a few seconds in a work folder beside the
output (:mod:`colorvid.chunks`). At the end the chunks are muxed, without
re-encoding, into the output with the source's audio and subtitles. Memory
is bounded by the queue sizes, whatever the film's length.

Because the chunks are kept until the end, a run that was stopped continues
where it was (``resume``), and one part of a film can be colorized on its
own (``segment``/``time_range``) for :func:`colorvid.chunks.join`. A run
that starts in the middle of a film first colorizes, and drops, the frames
the temporal smoother still remembers, so no seam shows where it started.
"""

from __future__ import annotations

import glob
import logging
import os
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

import torch

from colorvid.errors import ColorizeError, InputError, OutputError
from colorvid.smoothing import temporal_settings

if TYPE_CHECKING:
    from colorvid.chunks import FrameRange

log = logging.getLogger("colorvid")

VIDEO_SUFFIXES = {
    ".mp4", ".m4v", ".mkv", ".mov", ".avi", ".webm", ".mpg", ".mpeg", ".ts", ".m2ts", ".mts", ".flv",
    ".wmv", ".asf", ".ogv", ".3gp", ".mxf", ".dv", ".vob", ".y4m", ".nut",
}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"}
# Containers colorvid writes; a batch output keeps the input's when it is one of these.
WRITABLE_SUFFIXES = {".mp4", ".mkv", ".mov", ".webm", ".avi", ".ts", ".mpg"}
QUEUE_BATCHES = 2  # batches waiting between stages
_MATRIX_OF_SWS = {"itu601": "bt601", "itu709": "bt709", "bt2020": "bt2020"}


@dataclass(frozen=True)
class ColorizeOptions:
    model: str | None = None  # a name from weights.toml or a file; None = the default model
    device: str = "auto"
    batch_size: int = 8
    render_size: int = 256
    smooth: float | None = None  # temporal smoothing strength, 0..1; 0 = off; None: the mode's default
    temporal: str | None = None  # "none", "blend", "flow", "model"; None: the model's default (temporal_settings)
    half: bool | None = None  # None: half precision on CUDA only
    codec: str | None = None
    crf: int | None = None
    preset: str | None = None
    pix_fmt: str | None = None
    overwrite: bool = False
    skip_existing: bool = False
    suffix: str | None = None  # output container for batches, e.g. ".mkv"; None keeps the input's
    resume: bool = False  # continue the work an interrupted run left beside the output
    chunk_seconds: float = 4.0  # length of the independently encoded pieces (what a resume redoes)
    deinterlace: str | None = None  # "bwdif" or "yadif"; None = frames as decoded
    segment: tuple[int, int] | None = None  # (I, N): only part I of N equal spans of the film
    time_range: tuple[Fraction, Fraction | None] | None = None  # seconds [start, end); end None = to the end


@dataclass
class FileResult:
    input: str
    output: str
    status: str  # "ok", "skipped", "failed" or "interrupted"
    frames: int = 0
    seconds: float = 0.0
    error: str | None = None


@dataclass
class Job:
    input: Path
    output: Path


# --- planning ------------------------------------------------------------------------


def expand_inputs(inputs: Iterable[str]) -> list[Path]:
    """Files, folders (their videos and images, recursively) and globs, in a stable order."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found.extend(
                sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES | IMAGE_SUFFIXES
                       and ".colorvid-tmp-" not in p.name)
            )
        elif not path.exists() and glob.has_magic(item):
            matches = sorted(Path(p) for p in glob.glob(item, recursive=True) if Path(p).is_file())
            if not matches:
                raise InputError(f"{item}: no file matches this pattern")
            found.extend(matches)
        else:
            found.append(path)  # a missing file fails in its own job, naming it
    return found


def plan_jobs(inputs: list[str], output: Path, options: ColorizeOptions) -> list[Job]:
    """Pair inputs with outputs: one input and a file name, or many inputs into a folder."""
    files = expand_inputs(inputs)
    single = len(inputs) == 1 and not Path(inputs[0]).is_dir() and not glob.has_magic(inputs[0])
    if single and not output.is_dir():
        return [Job(files[0], output)]
    if output.exists() and not output.is_dir():
        raise OutputError(f"{output}: several inputs need -o to be a folder")
    roots = [Path(i) for i in inputs if Path(i).is_dir()]
    jobs = []
    for path in files:
        root = next((r for r in roots if _is_relative_to(path, r)), None)
        relative = path.relative_to(root) if root else Path(path.name)
        suffix = options.suffix or (path.suffix.lower() if path.suffix.lower() in WRITABLE_SUFFIXES | IMAGE_SUFFIXES else ".mkv")
        jobs.append(Job(path, output / relative.with_suffix(suffix)))
    seen: dict[Path, Path] = {}
    for job in jobs:
        if job.output in seen:
            raise OutputError(f"{job.output}: both {seen[job.output]} and {job.input} would be written here")
        seen[job.output] = job.input
    return jobs


def _is_relative_to(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
        return True
    except ValueError:
        return False


# --- running ---------------------------------------------------------------------------


ProgressFactory = Callable[[str, int | None], "Progress"]


class Progress:
    """What the pipeline reports to; the CLI passes a tqdm-backed one."""

    def update(self, frames: int) -> None:  # pragma: no cover - interface
        pass

    def close(self) -> None:  # pragma: no cover - interface
        pass


def no_progress(name: str, total: int | None) -> Progress:
    return Progress()


class Pipeline:
    """Holds the model; colorizes any number of files with it."""

    def __init__(self, options: ColorizeOptions, progress: ProgressFactory = no_progress):
        from colorvid.colorizer import select_device
        from colorvid.weights import open_model

        self.options = options
        try:
            self.device = select_device(options.device)
        except ValueError as exc:
            raise ColorizeError(str(exc)) from None
        self.half = options.half if options.half is not None else self.device.type == "cuda"
        self.model = open_model(options.model, self.device, self.half, optimize=True)
        has_head = getattr(self.model, "temporal", None) is not None
        try:
            temporal, smooth = temporal_settings(options.temporal, options.smooth, has_head)
        except ValueError as exc:
            raise ColorizeError(f"{options.model or 'the default model'}: {exc}") from None
        self.options = options = replace(options, temporal=temporal, smooth=smooth)
        self.progress = progress
        self._model_id: str | None = None

    def run_one(self, job: Job) -> FileResult:
        start = time.monotonic()
        result = FileResult(str(job.input), str(job.output), "ok")
        if self.options.skip_existing and self._done_before(job):
            result.status = "skipped"
            log.info("%s: skipped, %s exists", job.input, job.output)
            return result
        try:
            job.output.parent.mkdir(parents=True, exist_ok=True)
            if job.input.suffix.lower() in IMAGE_SUFFIXES:
                result.frames = self.colorize_image(job.input, job.output)
            else:
                result.frames, written = self.colorize_video(job.input, job.output)
                result.output = str(written)
        except ColorizeError as exc:
            result.status, result.error = "failed", str(exc)
        except OSError as exc:
            result.status, result.error = "failed", f"{exc.filename or job.output}: {exc.strerror or exc}"
        result.seconds = time.monotonic() - start
        return result

    def _done_before(self, job: Job) -> bool:
        if job.output.exists():
            return True
        if self.options.segment or self.options.time_range:  # a finished part counts too
            from colorvid import chunks

            try:
                frames = self._frame_range(job.input)
            except ColorizeError:
                return False  # the run itself reports it
            return chunks.finished_part_exists(chunks.part_folder_for(job.output, frames))
        return False

    # --- still images

    def colorize_image(self, source: Path, target: Path) -> int:
        import numpy as np
        from PIL import Image

        from colorvid.colorizer import colorize_rgb

        if target.suffix.lower() not in IMAGE_SUFFIXES:
            raise OutputError(f"{target}: an image is written as one of {', '.join(sorted(IMAGE_SUFFIXES))}")
        check_output_image(source, target, self.options.overwrite)
        try:
            with Image.open(source) as im:
                rgb = np.asarray(im.convert("RGB"))
        except FileNotFoundError:
            raise InputError(f"{source}: no such file") from None
        except OSError as exc:
            raise InputError(f"{source}: not a readable image ({exc})") from None
        tensor = torch.from_numpy(rgb.copy()).permute(2, 0, 1).float() / 255.0
        out = colorize_rgb(self.model, tensor, self.device, self.options.render_size, self.half)
        array = (out.permute(1, 2, 0).cpu().numpy() * 255.0).round().clip(0, 255).astype(np.uint8)
        temp = target.with_name(f".{target.stem}.colorvid-tmp{target.suffix}")
        try:
            Image.fromarray(array).save(temp)
            os.replace(temp, target)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        return 1

    # --- video

    def colorize_video(self, source: Path, target: Path) -> tuple[int, Path]:
        """Colorize ``source`` into ``target`` (or into a part folder beside it).

        Returns the number of frames written and where (``target``, or the part folder).

        The frames go into chunks in a work folder; an interruption (Ctrl-C,
        SIGTERM) keeps that folder for ``resume``, any other failure removes it.
        """
        from colorvid import chunks
        from colorvid.video_io import check_output, probe

        opts = self.options
        info = probe(source)
        frames = self._frame_range(source)
        # a part's final file is written later by join: only its name is checked now
        check_output(target, opts.overwrite or not frames.whole, source, opts.codec, opts.pix_fmt)
        if frames.whole:
            folder_path = chunks.work_folder_for(target)
        else:
            folder_path = chunks.part_folder_for(target, frames)
            if chunks.finished_part_exists(folder_path) and not (opts.overwrite or opts.resume):
                raise OutputError(f"{folder_path}: this part exists already (use --overwrite to redo it)")
        state = chunks.new_state(source, info, self._settings(), frames, target)
        folder = chunks.WorkFolder.open(folder_path, state, resume=opts.resume, restart=opts.overwrite,
                                        output=target)
        try:
            resumed = bool(folder.chunks)
            if not folder.complete:
                self._encode_chunks(source, info, folder, target, frames)
            if not frames.whole:
                folder.close()
                log.info("%s: when every part is done, join them with: colorvid join %s.part* -o %s",
                         folder_path, target, target)
                return folder.frames, folder_path
            if resumed:
                _remove_stale_temp_files(target)
            written = chunks.assemble([folder], target, source, opts.overwrite)
        except KeyboardInterrupt:
            if folder.chunks:
                folder.close()  # kept for --resume
                log.info("%s: stopped; %d frames done are kept in %s for --resume", source, folder.frames, folder_path)
            else:
                folder.remove()
            raise
        except BaseException:
            folder.remove()
            raise
        folder.remove()
        return written, target

    def _frame_range(self, source: Path) -> FrameRange:
        from colorvid.chunks import FrameRange, segment_range, time_range
        from colorvid.video_io import timeline

        opts = self.options
        if opts.segment is None and opts.time_range is None:
            return FrameRange()
        start_pts, end_pts, time_base = timeline(source)
        if opts.segment is not None:
            return segment_range(*opts.segment, start_pts, end_pts)
        return time_range(*opts.time_range, start_pts, time_base)

    def _settings(self) -> dict:
        """Everything that changes the output's frames: a run is only resumed with the same."""
        opts = self.options
        return {
            "model": self._model_sha256(),
            "render_size": opts.render_size,
            "temporal": opts.temporal,
            "smooth": opts.smooth,
            "half": self.half,
            "deinterlace": opts.deinterlace,
            "codec": opts.codec,
            "crf": opts.crf,
            "preset": opts.preset,
            "pix_fmt": opts.pix_fmt,
        }

    def _model_sha256(self) -> str:
        if self._model_id is None:
            from colorvid.weights import load_registry, resolve, sha256_file

            registry = load_registry()
            self._model_id = sha256_file(resolve(self.options.model or registry.default_name(), registry))
        return self._model_id

    def _encode_chunks(self, source: Path, info, folder, target: Path, frames) -> None:
        from colorvid.chunks import ChunkWriter, encode_options
        from colorvid.colorizer import WORK_FORMATS, FrameColorizer
        from colorvid.smoothing import memory_frames
        from colorvid.video_io import PacketEncoder

        opts = self.options
        probe_encoder = PacketEncoder(target, info, encode_options(folder.state))  # refuses bad settings now
        probe_encoder.close()
        # chroma is computed in the encoder's Y'CbCr (MJPEG, for one, is always full range)
        colorizer = FrameColorizer(
            self.model, self.device, _MATRIX_OF_SWS[probe_encoder.sws_colorspace],
            probe_encoder.sws_color_range == "JPEG", opts.render_size, opts.smooth, self.half,
            temporal=opts.temporal, source_matrix=info.matrix, source_full_range=info.full_range,
        )
        work_format = probe_encoder.pix_fmt if probe_encoder.pix_fmt in WORK_FORMATS else (
            "yuv444p10le" if info.bit_depth > 8 else "yuv444p")
        done_pts = folder.chunks[-1]["last_pts"] if folder.chunks else None
        selection = _FrameSelection(
            source, info, frames, done_pts, warmup=memory_frames(opts.temporal, opts.smooth),
            deinterlace=opts.deinterlace,
        )
        progress = self.progress(source.name, info.frame_count if frames.whole else None)
        progress.update(folder.frames)
        writer = ChunkWriter(folder, target, opts.chunk_seconds)
        try:
            batches = _batched(selection, opts.batch_size)
            with _Stage(batches, "decode") as decoded, _Sink(writer.write, "encode") as encoder:
                for batch in decoded:
                    out = colorizer.colorize_frames([frame for frame, _ in batch], work_format)
                    kept = [frame for frame, (_, keep) in zip(out, batch) if keep]
                    if kept:
                        encoder.put(kept)
                        progress.update(len(kept))
            writer.finish(covers_end=selection.reached_end)
        except BaseException:
            writer.abort()
            raise
        finally:
            progress.close()
        if colorizer.cuts:
            log.debug("%s: %d scene cuts", source, colorizer.cuts)


def _remove_stale_temp_files(target: Path) -> None:
    """Temporary outputs a killed run left (only called while holding the target's work folder)."""
    for stale in target.parent.glob(f".{glob.escape(target.stem)}.colorvid-tmp-*{glob.escape(target.suffix)}"):
        stale.unlink(missing_ok=True)


class _FrameSelection:
    """The decoded frames a run needs, each with whether it is written: ``(frame, keep)``.

    A run that starts inside the film (a resume, or a part other than the
    first) also needs the frames just before its first one: ``warmup`` frames
    are colorized but not written, so the temporal smoother has the state an
    uninterrupted run would have; with deinterlacing, a few more go through
    the filter only (it looks at neighbouring frames), and so do a few after
    a part's end. No other frame reaches the network.

    Frames are told apart by their timestamps. Decoding starts at a keyframe
    before the first frame needed (found by a first pass that only decodes,
    from a seek point that is moved back until it is early enough); a file
    that cannot seek, or has frames without timestamps, is decoded from its
    start. ``reached_end`` says whether decoding reached the end of the file.
    """

    _CONTEXT_AFTER = 2  # frames after a part's end, for the deinterlacer
    _SEEK_MARGIN = 2.0  # seconds before the frames needed

    def __init__(self, source: Path, info, frames, done_pts: int | None, warmup: int, deinterlace: str | None):
        self.source = source
        self.info = info
        self.frames = frames
        self.done_pts = done_pts
        self.warmup = warmup
        self.deinterlace = deinterlace
        self.filter_context = 2 if deinterlace else 0
        self.reached_end = False

    def _before(self, pts: int) -> bool:
        """Does this frame come before the first one to write?"""
        start, done = self.frames.start, self.done_pts
        return (start is not None and pts < start) or (done is not None and pts <= done)

    def _wanted(self, pts: int) -> bool:
        return self.frames.contains(pts) and not self._before(pts)

    def __iter__(self) -> Iterator[tuple]:
        from colorvid.video_io import VideoReader, deinterlaced

        seek_pts, context = None, []
        if self.frames.start is not None or self.done_pts is not None:
            seek_pts, context = self._find_context()
        warm = set(context[max(0, len(context) - self.warmup):]) if self.warmup else set()
        context = set(context)
        with VideoReader(self.source, seek_pts=seek_pts) as reader:

            def decoded():
                after_end = 0
                for frame in reader:
                    pts = frame.pts
                    if self._before(pts) and pts not in context:
                        continue
                    if self.frames.end is not None and pts >= self.frames.end:
                        after_end += 1
                        if after_end > (self._CONTEXT_AFTER if self.deinterlace else 0):
                            return
                    yield frame
                self.reached_end = True

            stream = deinterlaced(decoded(), self.deinterlace) if self.deinterlace else decoded()
            told = False
            for frame in stream:
                pts = frame.pts
                if self._wanted(pts):
                    if not told and not self.deinterlace and frame.interlaced_frame:
                        log.info("%s: the video is interlaced; --deinterlace may look better", self.source)
                    told = True
                    yield frame, True
                elif pts in warm:
                    yield frame, False

    def _find_context(self) -> tuple[int | None, list[int]]:
        """(seek point, pts of the frames needed before the first one to write).

        Raises:
            InputError: a resumed run's last written frame is no longer in the file.
        """
        from colorvid.video_io import SeekError

        count = self.warmup + self.filter_context
        boundary = max(b for b in (self.frames.start, self.done_pts) if b is not None)
        time_base = self.info.time_base
        rate = self.info.frame_rate or 25
        margin = max(self._SEEK_MARGIN, 2 * (count + 1) / float(rate))
        for factor in (1, 4, 16):
            target = boundary - round(Fraction(margin * factor) / time_base)
            if target <= round(Fraction(self.info.start_time) / time_base):
                break  # that is the start of the file anyway
            try:
                found = self._scan(target, count)
            except SeekError:
                break
            if found is not None:
                return target, found
        found = self._scan(None, count)
        if found is None:
            at = float(self.done_pts * time_base)
            raise InputError(
                f"{self.source}: the frame at {at:.3f} s, the last one done before, is not in the file any more; "
                "it decodes differently than when this run started (use --overwrite to start over)"
            )
        return None, found

    def _scan(self, seek_pts: int | None, count: int) -> list[int] | None:
        """Decode from ``seek_pts`` to the first frame to write; the pts of the ``count`` frames
        before it, or None if the seek did not land early enough (or timestamps are unreliable)."""
        from colorvid.video_io import VideoReader

        context: deque[int] = deque(maxlen=count or None)
        seen_done = self.done_pts is None
        first = True
        with VideoReader(self.source, seek_pts=seek_pts) as reader:
            try:
                for frame in reader:
                    if seek_pts is not None and reader.frames_without_pts:
                        return None
                    pts = frame.pts
                    if not self._before(pts):
                        if first and seek_pts is not None:
                            return None  # landed after the frames needed
                        break
                    first = False
                    seen_done = seen_done or pts == self.done_pts
                    if count:
                        context.append(pts)
            except InputError:
                if seek_pts is not None:
                    return None
                raise
        if not seen_done:
            return None
        if seek_pts is not None and len(context) < count:
            return None  # too close to the seek point: start earlier
        return list(context)


def check_output_image(source: Path, target: Path, overwrite: bool) -> None:
    if target.exists() and not overwrite:
        raise OutputError(f"{target}: already exists (use --overwrite)")
    if source.exists() and target.exists() and os.path.samefile(source, target):
        raise OutputError(f"{target}: the output would overwrite the input")
    if not os.access(target.parent, os.W_OK):
        raise OutputError(f"{target}: folder {target.parent} is not writable")


def _batched(frames: Iterable, size: int) -> Iterator[list]:
    batch = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class _Stage:
    """Runs an iterator in a thread, handing its items over through a bounded queue."""

    _DONE = object()

    def __init__(self, source: Iterable, name: str):
        self._source = source
        self._queue: queue.Queue = queue.Queue(maxsize=QUEUE_BATCHES)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"colorvid-{name}", daemon=True)

    def _run(self) -> None:
        try:
            for item in self._source:
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
        except BaseException as exc:  # handed to the consumer
            self._error = exc
        finally:
            self._put_done()

    def _put_done(self) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(self._DONE, timeout=0.1)
                return
            except queue.Full:
                continue

    def __enter__(self) -> Iterator:
        self._thread.start()
        return self._items()

    def _items(self) -> Iterator:
        while True:
            item = self._queue.get()
            if item is self._DONE:
                if self._error is not None:
                    raise self._error
                return
            yield item

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()


class _Sink:
    """Consumes batches in a thread (the encoder); errors surface on the next put or at exit."""

    _DONE = object()

    def __init__(self, consume: Callable, name: str):
        self._consume = consume
        self._queue: queue.Queue = queue.Queue(maxsize=QUEUE_BATCHES)
        self._error: BaseException | None = None
        self._failed = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"colorvid-{name}", daemon=True)

    def _run(self) -> None:
        while True:
            batch = self._queue.get()
            if batch is self._DONE:
                return
            if self._failed.is_set():
                continue  # drain without work after a failure
            try:
                for item in batch:
                    self._consume(item)
            except BaseException as exc:
                self._error = exc
                self._failed.set()

    def put(self, batch: list) -> None:
        if self._error is not None:
            raise self._error
        while True:
            try:
                self._queue.put(batch, timeout=0.1)
                return
            except queue.Full:
                if self._error is not None:
                    raise self._error

    def __enter__(self) -> "_Sink":
        self._thread.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self._failed.set()  # the block failed: stop encoding, just drain
        self._queue.put(self._DONE)
        self._thread.join()
        if exc_type is None and self._error is not None:
            raise self._error
