"""Colorizing files: inputs to outputs, one model, decode/infer/encode overlapped.

A video goes through three stages joined by bounded queues: a thread decodes
and batches frames, the calling thread runs the network, and a thread
encodes and muxes (with the source's audio and subtitles). Memory is bounded
by the queue sizes, whatever the film's length.
"""

from __future__ import annotations

import glob
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch

from colorvid.errors import ColorizeError, InputError, OutputError

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
    smooth: float = 0.0  # temporal smoothing strength, 0..1; 0 = off
    temporal: str | None = None  # "none", "blend" or "flow"; None = "blend" (with smooth > 0)
    half: bool | None = None  # None: half precision on CUDA only
    codec: str | None = None
    crf: int | None = None
    preset: str | None = None
    pix_fmt: str | None = None
    overwrite: bool = False
    skip_existing: bool = False
    suffix: str | None = None  # output container for batches, e.g. ".mkv"; None keeps the input's


@dataclass
class FileResult:
    input: str
    output: str
    status: str  # "ok", "skipped" or "failed"
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
        self.model = open_model(options.model, self.device, self.half)
        self.progress = progress

    def run(self, jobs: list[Job]) -> list[FileResult]:
        results = []
        for job in jobs:
            results.append(self.run_one(job))
        return results

    def run_one(self, job: Job) -> FileResult:
        start = time.monotonic()
        result = FileResult(str(job.input), str(job.output), "ok")
        if self.options.skip_existing and job.output.exists():
            result.status = "skipped"
            log.info("%s: skipped, %s exists", job.input, job.output)
            return result
        try:
            job.output.parent.mkdir(parents=True, exist_ok=True)
            if job.input.suffix.lower() in IMAGE_SUFFIXES:
                result.frames = self.colorize_image(job.input, job.output)
            else:
                result.frames = self.colorize_video(job.input, job.output)
        except ColorizeError as exc:
            result.status, result.error = "failed", str(exc)
        except OSError as exc:
            result.status, result.error = "failed", f"{exc.filename or job.output}: {exc.strerror or exc}"
        result.seconds = time.monotonic() - start
        return result

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
        out = colorize_rgb(self.model, tensor, self.device, self.options.render_size)
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

    def colorize_video(self, source: Path, target: Path) -> int:
        from colorvid.colorizer import WORK_FORMATS, FrameColorizer
        from colorvid.video_io import EncodeOptions, VideoReader, VideoWriter, check_output, probe

        opts = self.options
        check_output(target, opts.overwrite, source, opts.codec, opts.pix_fmt)
        info = probe(source)
        encode = EncodeOptions(codec=opts.codec, crf=opts.crf, preset=opts.preset, pix_fmt=opts.pix_fmt,
                               overwrite=opts.overwrite)
        progress = self.progress(source.name, info.frame_count)
        frames = 0
        try:
            with VideoReader(source) as reader, VideoWriter(target, info, encode, passthrough_source=source) as writer:
                # chroma is computed in the writer's Y'CbCr (MJPEG, for one, is always full range)
                colorizer = FrameColorizer(
                    self.model, self.device, _MATRIX_OF_SWS[writer.sws_colorspace], writer.sws_color_range == "JPEG",
                    opts.render_size, opts.smooth, self.half, temporal=opts.temporal,
                    source_matrix=info.matrix, source_full_range=info.full_range,
                )
                work_format = writer.pix_fmt if writer.pix_fmt in WORK_FORMATS else (
                    "yuv444p10le" if info.bit_depth > 8 else "yuv444p")
                batches = _batched(reader, opts.batch_size)
                with _Stage(batches, "decode") as decoded, _Sink(writer.write, "encode") as encoder:
                    for batch in decoded:
                        out = colorizer.colorize_frames(batch, work_format)
                        encoder.put(out)
                        frames += len(out)
                        progress.update(len(out))
            if colorizer.cuts:
                log.debug("%s: %d scene cuts", source, colorizer.cuts)
        finally:
            progress.close()
        return frames


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
