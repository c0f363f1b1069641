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
import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from colorvid import atomic
from colorvid.errors import ColorizeError, InputError, OutputError
from colorvid.io.formats import IMAGE_SUFFIXES, OUTPUT_EXTENSIONS, VIDEO_SUFFIXES
from colorvid.runtime import LoadedModel

if TYPE_CHECKING:
    from colorvid.keyframes import KeyframeSet
    from colorvid.ranges import FrameRange

log = logging.getLogger("colorvid")

KEYFRAME_WARMUP_MAX = 7200  # frames (5 minutes at 24 fps) colorized, unwritten, to reach back to a keyframe



@dataclass(frozen=True)
class ColorizeOptions:
    model: str | None = None  # a name from weights.toml or a file; None = the default model
    device: str = "auto"
    batch_size: int = 8
    render_size: int | None = None  # None: the model's default (its family's meaning)
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
    keyframes: Path | None = None  # a folder of a colorist's keyframes for the (one) film
    keyframes_model: str | None = None  # another model that colors each shot's first frame as its keyframe
    keyframes_every: float | None = None  # seconds: the keyframes model also colors a frame this often in a shot
    keyframes_fit: bool = False  # fit the model's read-out to the keyframes first (colorvid models)
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
                       and not atomic.is_temporary(p))
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
        kept = path.suffix.lower() in IMAGE_SUFFIXES or path.suffix.lower() in OUTPUT_EXTENSIONS
        suffix = options.suffix or (path.suffix.lower() if kept else ".mkv")
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


def load_for(options: ColorizeOptions) -> LoadedModel:
    """The model and settings ``options`` ask for, loaded."""
    return LoadedModel.load(options.model, options.device, options.half, options.render_size, options.temporal,
                            options.smooth, options.keyframes_model)


class Report:
    """``--report``: one JSON line per file appended to a file, flushed at once, so it survives a crash.

    Raises:
        OutputError: the file cannot be opened or written.
    """

    def __init__(self, path: Path | None):
        self.path = path
        self._handle = None
        if path is not None:
            try:
                self._handle = open(path, "a", encoding="utf-8")
            except OSError as exc:
                raise OutputError(f"{path}: cannot write the report ({exc.strerror})") from None

    def __enter__(self) -> Report:
        return self

    def __exit__(self, *exc_info) -> None:
        if self._handle is not None:
            self._handle.close()

    def add(self, result: FileResult) -> None:
        if self._handle is None:
            return
        entry = asdict(result)
        entry["seconds"] = round(entry["seconds"], 3)
        try:
            self._handle.write(json.dumps(entry, ensure_ascii=False) + "\n")
            self._handle.flush()
        except OSError as exc:
            raise OutputError(f"{self.path}: cannot write the report ({exc.strerror})") from None


def colorize_files(
    inputs: list[str],
    output: Path,
    options: ColorizeOptions,
    progress: ProgressFactory = no_progress,
    report: Path | None = None,
    on_result: Callable[[FileResult], None] | None = None,
) -> list[FileResult]:
    """Colorize every input (files, folders, globs) into ``output`` with one model.

    A file that fails does not stop the others: its result says why. Each
    result goes to ``report`` (JSON lines) and to ``on_result`` as soon as it
    is known; an interrupted file is reported as such before the
    KeyboardInterrupt goes on.

    Raises:
        ColorizeError: the inputs or output cannot be planned, the report cannot be
            written, or the model cannot be loaded.
    """
    jobs = plan_jobs(inputs, output, options)
    results = []
    with Report(report) as log_file:
        runner = Pipeline(options, progress=progress)
        for job in jobs:
            try:
                result = runner.run_one(job)
            except KeyboardInterrupt:
                log_file.add(FileResult(str(job.input), str(job.output), "interrupted"))
                raise
            log_file.add(result)
            results.append(result)
            if on_result is not None:
                on_result(result)
    return results


class Pipeline:
    """Colorizes any number of files with one loaded model (``model``, loaded from ``options`` if not given)."""

    def __init__(self, options: ColorizeOptions, progress: ProgressFactory = no_progress,
                 model: LoadedModel | None = None):
        self.runtime = model if model is not None else load_for(options)
        # with the temporal mode and strength settled for the model
        self.options = replace(options, temporal=self.runtime.temporal, smooth=self.runtime.smooth)
        self.progress = progress

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
        runtime = self.runtime
        out = colorize_rgb(runtime.model, tensor, runtime.device)
        array = (out.permute(1, 2, 0).cpu().numpy() * 255.0).round().clip(0, 255).astype(np.uint8)
        with atomic.atomic_path(target) as temp:
            Image.fromarray(array).save(temp)
        return 1

    # --- video

    def colorize_video(self, source: Path, target: Path) -> tuple[int, Path]:
        """Colorize ``source`` into ``target`` (or into a part folder beside it).

        Returns the number of frames written and where (``target``, or the part folder).

        The frames go into chunks in a work folder; an interruption (Ctrl-C,
        SIGTERM) keeps that folder for ``resume``, any other failure removes it.
        """
        from colorvid import chunks
        from colorvid.io import check_output, probe

        opts = self.options
        info = probe(source)
        frames = self._frame_range(source)
        keyframes = self._keyframes(source)
        # a part's final file is written later by join: only its name is checked now
        check_output(target, opts.overwrite or not frames.whole, source, opts.codec, opts.pix_fmt)
        if frames.whole:
            folder_path = chunks.work_folder_for(target)
        else:
            folder_path = chunks.part_folder_for(target, frames)
            if chunks.finished_part_exists(folder_path) and not (opts.overwrite or opts.resume):
                raise OutputError(f"{folder_path}: this part exists already (use --overwrite to redo it)")
        settings = self._settings()
        if keyframes is not None:
            settings["keyframes"] = keyframes.digest()
            settings["keyframes_fit"] = opts.keyframes_fit
        if self.runtime.key_file is not None:
            settings["keyframes_model"] = self.runtime.key_file.sha256
            settings["keyframes_every"] = opts.keyframes_every
        state = chunks.new_state(source, info, settings, frames, target)
        folder = chunks.WorkFolder.open(folder_path, state, resume=opts.resume, restart=opts.overwrite,
                                        output=target)
        try:
            resumed = bool(folder.chunks)
            if not folder.complete:
                self._encode_chunks(source, info, folder, target, frames, keyframes)
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

    def _keyframes(self, source: Path) -> KeyframeSet | None:
        from colorvid.keyframes import KeyframeSet

        if self.options.keyframes is None:
            return None
        keyframes = KeyframeSet.from_folder(self.options.keyframes, source)
        log.info("%s: %d keyframe%s from %s", source, len(keyframes), "" if len(keyframes) == 1 else "s",
                 self.options.keyframes)
        return keyframes

    def _frame_range(self, source: Path) -> FrameRange:
        from colorvid.io import timeline
        from colorvid.ranges import FrameRange, segment_range, time_range

        opts = self.options
        if opts.segment is not None:
            start_pts, end_pts, _ = timeline(source)
            return segment_range(*opts.segment, start_pts, end_pts)
        if opts.time_range is not None:
            start_pts, _, time_base = timeline(source)
            return time_range(*opts.time_range, start_pts, time_base)
        return FrameRange()

    def _settings(self) -> dict:
        """Everything that changes the output's frames: a run is only resumed with the same."""
        opts = self.options
        return {
            "model": self.runtime.sha256,
            "render_size": self.runtime.render_size,
            "temporal": opts.temporal,
            "smooth": opts.smooth,
            "half": self.runtime.half,
            "deinterlace": opts.deinterlace,
            "codec": opts.codec,
            "crf": opts.crf,
            "preset": opts.preset,
            "pix_fmt": opts.pix_fmt,
        }

    def _encode_chunks(self, source: Path, info, folder, target: Path, frames, keyframes: KeyframeSet | None
                       ) -> None:
        from colorvid.chunks import ChunkWriter, encode_options
        from colorvid.color import work_format
        from colorvid.io import PacketEncoder
        from colorvid.selection import FrameSelection
        from colorvid.smoothing import memory_frames
        from colorvid.stages import Sink, Stage, batched

        opts = self.options
        assert opts.smooth is not None, "settled for the model in __init__"
        probe_encoder = PacketEncoder(target, info, encode_options(folder.state))  # refuses bad settings now
        probe_encoder.close()
        runtime = self.runtime
        if keyframes is not None and opts.keyframes_fit:
            runtime = runtime.fitted(keyframes.images())
        # chroma is computed in the encoder's Y'CbCr (MJPEG, for one, is always full range)
        colorizer = runtime.frame_colorizer(
            probe_encoder.matrix, probe_encoder.full_range, source_matrix=info.matrix,
            source_full_range=info.full_range, key_every=opts.keyframes_every,
        )
        frames_format = work_format(probe_encoder.pix_fmt, info.bit_depth)
        done_pts = folder.chunks[-1]["last_pts"] if folder.chunks else None
        warmup = memory_frames(opts.temporal, opts.smooth)
        if keyframes is not None:
            warmup = max(warmup, keyframe_warmup(source, keyframes, frames.start, done_pts))
        selection = FrameSelection(source, info, frames, done_pts, warmup=warmup, deinterlace=opts.deinterlace)
        ahead = None
        if keyframes is not None or colorizer.key_model is not None:
            # the same frames again, read ahead (past a part's end too) to carry keyframes backwards
            again = FrameSelection(source, info, replace(frames, end=None), done_pts, warmup=warmup,
                                   deinterlace=opts.deinterlace)
            frames_again = (frame for frame, _ in again)
            if keyframes is None:
                ahead = ((frame, None) for frame in frames_again)
            else:  # without a key model, nothing is read after the last keyframe
                ahead = keyframes.shown(frames_again, to_end=colorizer.key_model is not None)
            colorizer.read_ahead(ahead, frames_format)
        progress = self.progress(source.name, info.frame_count if frames.whole else None)
        progress.update(folder.frames)
        writer = ChunkWriter(folder, target, opts.chunk_seconds)
        try:
            batches = batched(selection, opts.batch_size)
            with Stage(batches, "decode") as decoded, Sink(writer.write, "encode") as encoder:
                for batch in decoded:
                    keys = {}
                    if keyframes is not None:
                        numbers = {i: keyframes.at(frame.pts) for i, (frame, _) in enumerate(batch)}
                        keys = {i: keyframes.image(n) for i, n in numbers.items() if n is not None}
                    out = colorizer.colorize_frames([frame for frame, _ in batch], frames_format, keys)
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
            if ahead is not None:
                ahead.close()  # and its decoder
        if colorizer.cuts:
            log.debug("%s: %d scene cuts", source, colorizer.cuts)


def keyframe_warmup(source: Path, keyframes: KeyframeSet, start: int | None, done_pts: int | None) -> int:
    """Frames to colorize before a run that starts inside the film (a part, a resume) so that it
    carries the colors of the last keyframe before its first frame, as a run from the start does.

    Capped at KEYFRAME_WARMUP_MAX frames; a part further from its keyframe starts from the
    automatic colors (a warning says so).
    """
    from colorvid.keyframes import presentation_pts

    if done_pts is not None and (start is None or done_pts >= start):
        last_before = done_pts  # frames up to and including it are done

        def before(pts: int) -> bool:
            return pts <= done_pts
    elif start is not None:
        last_before = start - 1

        def before(pts: int) -> bool:
            return pts < start
    else:
        return 0
    key_pts = keyframes.latest_at_or_before(last_before)
    if key_pts is None:
        return 0
    count = sum(1 for pts in presentation_pts(source) if key_pts <= pts and before(pts))
    if count > KEYFRAME_WARMUP_MAX:
        log.warning("%s: the keyframe before this part is %d frames earlier; colorizing from the automatic colors "
                    "(run the whole film, or add a keyframe nearer)", source, count)
        return 0
    return count


def _remove_stale_temp_files(target: Path) -> None:
    """Temporary outputs a killed run left (only called while holding the target's work folder)."""
    for stale in target.parent.glob(atomic.temp_pattern(target)):
        stale.unlink(missing_ok=True)


def check_output_image(source: Path, target: Path, overwrite: bool) -> None:
    if target.exists() and not overwrite:
        raise OutputError(f"{target}: already exists (use --overwrite)")
    if source.exists() and target.exists() and os.path.samefile(source, target):
        raise OutputError(f"{target}: the output would overwrite the input")
    if not os.access(target.parent, os.W_OK):
        raise OutputError(f"{target}: folder {target.parent} is not writable")
