"""Scoring colorizations against the color originals (``colorvid evaluate``).

A reference is a color video, or a folder of frames (images sorted by
name). Its gray version (its luma with zero chroma) is what a black-and-white
film would be: without ``colorized`` outputs, the reference frames go
straight through :class:`~colorvid.colorizer.FrameColorizer`, which only
reads their luma, so this is the same as colorizing a gray copy without
writing one. With ``colorized`` outputs, those are decoded and compared.

Per clip, for the colorized output and for the gray baseline:

- PSNR (dB) of RGB, per frame, then averaged; a frame identical to its
  reference counts as :data:`PSNR_CAP_DB`;
- SSIM (scikit-image, 7x7 window, over the three channels), on every
  frame up to :data:`SSIM_FULL_PIXELS` pixels and on every k-th frame of
  larger videos (k grows with the pixel count);
- colorfulness (Hasler & Suesstrunk), per frame, then averaged; also for the
  reference, and the output's as a fraction of it;
- CDC, the temporal color-distribution consistency (lower is steadier),
  also for the reference;
- luma PSNR: the output's Y' against the input's, to check the colorizer
  left the picture's brightness alone.

Frames are streamed: a clip is never held in memory, only the last few
frames' histograms for CDC.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from colorvid import metrics
from colorvid.color import luma, sws_color_range, sws_colorspace
from colorvid.errors import InputError
from colorvid.io.formats import IMAGE_SUFFIXES, VIDEO_SUFFIXES
from colorvid.pipeline import ColorizeOptions, ProgressFactory, load_for, no_progress
from colorvid.runtime import LoadedModel

if TYPE_CHECKING:
    from colorvid.keyframes import KeyframeSet

log = logging.getLogger("colorvid")

PSNR_CAP_DB = 100.0  # an exact frame would make the mean infinite
SSIM_FULL_PIXELS = 640 * 360  # frames up to this size get SSIM on every frame


@dataclass(frozen=True)
class EvaluateOptions:
    colorize: ColorizeOptions = ColorizeOptions()  # model, device, batch size, render size, smoothing
    max_frames: int | None = None  # per clip; None: all
    ssim_every: int | None = None  # SSIM on every n-th frame; None: from the frame size
    # the references' own frames given to the colorizer as keyframes: "first" (the first frame),
    # "shots" (the first frame of each shot) or every N-th frame (N as a string); None: none
    keyframes_from_truth: str | None = None
    keyframes: Path | None = None  # a folder of painted keyframes for the (one, video) reference
    keyframes_fit: bool = False  # fit the model's read-out to each clip's keyframes first (not with "shots")


@dataclass
class Scores:
    """One picture source of a clip (output, gray baseline or reference). None: not measured."""

    psnr: float | None = None
    ssim: float | None = None
    colorfulness: float | None = None
    colorfulness_ratio: float | None = None  # colorfulness / the reference's
    cdc: float | None = None
    luma_psnr: float | None = None


@dataclass
class ClipScores:
    reference: str
    colorized: str | None  # None: colorized in memory
    frames: int
    ssim_frames: int
    width: int
    height: int
    matrix: str  # Y'CbCr matrix whose luma the colorizer keeps (and the gray baseline uses)
    output: Scores
    gray: Scores
    truth: Scores


@dataclass
class Evaluation:
    clips: list[ClipScores]
    mean: dict[str, Scores]  # "output", "gray", "truth": each metric averaged over the clips
    settings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "settings": self.settings,
            "clips": [asdict(clip) for clip in self.clips],
            "mean": {"clips": len(self.clips), **{name: asdict(s) for name, s in self.mean.items()}},
        }


# --- finding references and outputs -------------------------------------------------


@dataclass(frozen=True)
class Clip:
    """A video file, or a sequence of images (``images``) played in name order."""

    path: Path
    key: str  # relative name without suffix: matches an output to its reference
    images: tuple[Path, ...] | None = None

    def __str__(self) -> str:
        return str(self.path)


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")  # hidden files, and colorvid's temporary ones


def _images_in(folder: Path) -> tuple[Path, ...]:
    return tuple(sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                        and _visible(p)))


def find_clips(paths: list[str | os.PathLike]) -> list[Clip]:
    """References: video files, image files (one frame), frame folders, and folders of those.

    In a folder, each video is a clip and the images directly inside any
    (sub)folder make one clip named after that folder.
    """
    clips: list[Clip] = []
    for item in paths:
        path = Path(item)
        if not path.exists():
            raise InputError(f"{path}: no such file or folder")
        if path.is_file():
            clips.append(_file_clip(path, path.stem))
            continue
        found = []
        for folder, subfolders, names in os.walk(path):
            subfolders.sort()
            folder = Path(folder)
            relative = folder.relative_to(path)
            images = _images_in(folder)
            if images:
                found.append(Clip(folder, str(relative) if relative != Path(".") else path.name, images))
            for name in sorted(names):
                file = folder / name
                if file.suffix.lower() in VIDEO_SUFFIXES and _visible(file):
                    found.append(Clip(file, str((relative / name).with_suffix(""))))
        if not found:
            raise InputError(f"{path}: no video or image files in this folder")
        clips.extend(found)
    return clips


def _file_clip(path: Path, key: str) -> Clip:
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return Clip(path, key, (path,))
    return Clip(path, key)


def pair_outputs(references: list[Clip], colorized: str | os.PathLike) -> list[Clip]:
    """The colorized clip of each reference.

    ``colorized`` is the output of a single reference (a file or a frame
    folder), or a folder where each reference's output has the reference's
    relative name with any extension (``a.mp4`` -> ``a.mkv``), or is a frame
    folder of that name.
    """
    colorized = Path(colorized)
    if not colorized.exists():
        raise InputError(f"{colorized}: no such file or folder")
    if len(references) == 1 and (colorized.is_file() or _images_in(colorized)):
        if colorized.is_file():
            return [_file_clip(colorized, references[0].key)]
        return [Clip(colorized, references[0].key, _images_in(colorized))]
    if not colorized.is_dir():
        raise InputError(f"{colorized}: several references need --colorized to be a folder of outputs")
    outputs = []
    for ref in references:
        target = colorized / ref.key
        candidates = []
        if target.parent.is_dir():
            candidates = [p for p in target.parent.iterdir() if p.is_file() and p.stem == target.name
                          and p.suffix.lower() in VIDEO_SUFFIXES | IMAGE_SUFFIXES and _visible(p)]
        if target.is_dir() and _images_in(target):
            candidates.append(target)
        if not candidates:
            raise InputError(f"{colorized}: no output named {ref.key}.* (or frame folder {ref.key}/) for {ref.path}")
        if len(candidates) > 1:
            names = ", ".join(sorted(str(c) for c in candidates))
            raise InputError(f"{colorized}: several outputs could be the one of {ref.path}: {names}")
        found = candidates[0]
        outputs.append(Clip(found, ref.key, _images_in(found)) if found.is_dir() else _file_clip(found, ref.key))
    return outputs


# --- reading frames ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Format:
    """How a clip's frames relate to RGB, and the format the colorizer writes for it."""

    width: int
    height: int
    matrix: str
    full_range: bool
    work_format: str
    frame_count: int | None

    def to_rgb(self, frame) -> torch.Tensor:
        """A decoded or colorized frame -> RGB (3, H, W) uint8."""
        rgb = frame.reformat(
            format="rgb24",
            src_colorspace=sws_colorspace(self.matrix),
            src_color_range=sws_color_range(self.full_range),
        ).to_ndarray()
        return torch.from_numpy(rgb).permute(2, 0, 1)


@contextmanager
def open_clip(clip: Clip) -> Iterator[tuple[_Format, Iterator]]:
    """(format, iterator of av.VideoFrame) of a clip."""
    if clip.images is not None:
        yield _image_format(clip), _image_frames(clip)
        return
    from colorvid.color import work_format
    from colorvid.io import VideoReader, probe

    info = probe(clip.path)
    fmt = _Format(info.width, info.height, info.matrix, info.full_range, work_format(info.pix_fmt, info.bit_depth),
                  info.frame_count)
    with VideoReader(clip.path) as reader:
        yield fmt, iter(reader)


def _read_image(path: Path):
    import numpy as np
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except OSError as exc:
        raise InputError(f"{path}: not a readable image ({exc})") from None


def _image_format(clip: Clip) -> _Format:
    from PIL import Image

    images = clip.images
    assert images is not None, "a clip of image files"
    try:
        with Image.open(images[0]) as im:
            width, height = im.size
    except OSError as exc:
        raise InputError(f"{images[0]}: not a readable image ({exc})") from None
    # RGB images: Y'CbCr for the colorizer is BT.601 full range, as in JPEG.
    return _Format(width, height, "bt601", True, "yuv444p", len(images))


def _image_frames(clip: Clip) -> Iterator:
    import av

    images = clip.images
    assert images is not None, "a clip of image files"
    first_size = None
    for index, path in enumerate(images):
        rgb = _read_image(path)
        size = (rgb.shape[1], rgb.shape[0])
        first_size = first_size or size
        if size != first_size:
            raise InputError(f"{path}: is {size[0]}x{size[1]}, the first frame of {clip.path} is "
                             f"{first_size[0]}x{first_size[1]}")
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts = index
        yield frame


# --- measuring -------------------------------------------------------------------------


class _Mean:
    def __init__(self) -> None:
        self.total = 0.0
        self.count = 0

    def add(self, value: float) -> None:
        self.total += value
        self.count += 1

    def value(self) -> float | None:
        return self.total / self.count if self.count else None


def ssim_stride(width: int, height: int) -> int:
    """SSIM on every frame up to SSIM_FULL_PIXELS, every k-th frame above (e.g. 9th at 1080p)."""
    return max(1, math.ceil(width * height / SSIM_FULL_PIXELS))


class ClipMeter:
    """Accumulates the scores of one clip, a frame at a time."""

    def __init__(self, matrix: str = "bt601", ssim_every: int = 1):
        self.matrix = matrix
        self.ssim_every = ssim_every
        self.frames = 0
        self.ssim_frames = 0
        names = ("psnr", "gray_psnr", "ssim", "gray_ssim", "colorfulness", "gray_colorfulness",
                 "truth_colorfulness", "luma_psnr")
        self._means = {name: _Mean() for name in names}
        self._cdc = {"output": metrics.CDC(), "gray": metrics.CDC(), "truth": metrics.CDC()}

    def add(self, output: torch.Tensor, truth: torch.Tensor) -> None:
        """One frame: the colorized and the reference RGB, (3, H, W) uint8 (or float in [0, 1])."""
        if output.shape != truth.shape:
            raise ValueError(f"output frame is {tuple(output.shape)}, the reference's is {tuple(truth.shape)}")
        out, ref = _unit(output), _unit(truth)
        y = luma(ref, self.matrix)
        gray = y.expand_as(ref)
        means = self._means
        means["psnr"].add(_capped_psnr(out, ref))
        means["gray_psnr"].add(_capped_psnr(gray, ref))
        means["luma_psnr"].add(_capped_psnr(luma(out, self.matrix), y))
        means["colorfulness"].add(metrics.colorfulness(out))
        means["gray_colorfulness"].add(metrics.colorfulness(gray))
        means["truth_colorfulness"].add(metrics.colorfulness(ref))
        if self.frames % self.ssim_every == 0:
            means["ssim"].add(metrics.ssim(out, ref))
            means["gray_ssim"].add(metrics.ssim(gray, ref))
            self.ssim_frames += 1
        self._cdc["output"].add(metrics.channel_histograms(output))
        self._cdc["gray"].add(metrics.channel_histograms(gray))
        self._cdc["truth"].add(metrics.channel_histograms(truth))
        self.frames += 1

    def scores(self) -> dict[str, Scores]:
        m = {name: mean.value() for name, mean in self._means.items()}
        truth_colorfulness = m["truth_colorfulness"]
        return {
            "output": Scores(psnr=m["psnr"], ssim=m["ssim"], colorfulness=m["colorfulness"],
                             colorfulness_ratio=_ratio(m["colorfulness"], truth_colorfulness),
                             cdc=self._cdc["output"].value(), luma_psnr=m["luma_psnr"]),
            "gray": Scores(psnr=m["gray_psnr"], ssim=m["gray_ssim"], colorfulness=m["gray_colorfulness"],
                           colorfulness_ratio=_ratio(m["gray_colorfulness"], truth_colorfulness),
                           cdc=self._cdc["gray"].value()),
            "truth": Scores(colorfulness=truth_colorfulness,
                            colorfulness_ratio=_ratio(truth_colorfulness, truth_colorfulness),
                            cdc=self._cdc["truth"].value()),
        }


def _unit(rgb: torch.Tensor) -> torch.Tensor:
    """Float32 in [0, 1], planar in memory (per-plane arithmetic is much faster than on interleaved RGB)."""
    planar = rgb.to(torch.float32, memory_format=torch.contiguous_format)
    return planar.div_(255.0) if rgb.dtype == torch.uint8 else planar


def _capped_psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return min(metrics.psnr(a, b), PSNR_CAP_DB)


def _ratio(value: float | None, reference: float | None) -> float | None:
    if value is None or reference is None or reference < 1e-6:  # a gray reference has no color to match
        return None
    return value / reference


# --- running ----------------------------------------------------------------------------


def evaluate(
    references: list[str | os.PathLike],
    colorized: str | os.PathLike | None = None,
    options: EvaluateOptions = EvaluateOptions(),
    progress: ProgressFactory = no_progress,
) -> Evaluation:
    """Score each reference's colorization (made now, or read from ``colorized``) and the gray baseline.

    Raises:
        InputError: a reference or output that cannot be read, found, or compared.
        WeightsError: the model cannot be loaded.
    """
    clips = find_clips(references)
    outputs = pair_outputs(clips, colorized) if colorized is not None else None
    model = None
    settings: dict = {"psnr_cap_db": PSNR_CAP_DB, "max_frames": options.max_frames}
    if outputs is None:
        model = load_for(options.colorize)
        settings.update(model=model.name, device=str(model.device), render_size=model.render_size,
                        smooth=model.smooth, temporal=model.temporal, batch_size=options.colorize.batch_size,
                        keyframes_from_truth=options.keyframes_from_truth,
                        keyframes=str(options.keyframes) if options.keyframes is not None else None,
                        keyframes_model=options.colorize.keyframes_model,
                        keyframes_every=options.colorize.keyframes_every, keyframes_fit=options.keyframes_fit)
    results = []
    for index, clip in enumerate(clips):
        if model is not None:
            results.append(_colorize_and_score(clip, model, options, progress))
        else:
            assert outputs is not None, "no model: the outputs were given"
            results.append(_score_existing(clip, outputs[index], options, progress))
    return Evaluation(results, _mean_over(results), settings)


def _colorize_and_score(clip: Clip, model: LoadedModel, options: EvaluateOptions, progress: ProgressFactory
                        ) -> ClipScores:
    painted = None
    if options.keyframes is not None:
        from colorvid.keyframes import KeyframeSet

        if clip.images is not None:
            raise InputError(f"{clip.path}: --keyframes needs a video reference (keyframes are numbered by frame)")
        painted = KeyframeSet.from_folder(options.keyframes, clip.path)
    spec = options.keyframes_from_truth
    if options.keyframes_fit:
        model = model.fitted(_fit_keyframes(clip, spec, painted, options.max_frames))
    with ExitStack() as stack:
        fmt, frames = stack.enter_context(open_clip(clip))
        colorizer = model.frame_colorizer(fmt.matrix, fmt.full_range, key_every=options.colorize.keyframes_every)
        choose = TruthKeyframes(spec) if spec else None
        if painted is not None or (choose is not None and choose.every is not None) or colorizer.key_model is not None:
            # a second pass over the clip, read ahead, carries each keyframe back to the start of its shot
            _, again = stack.enter_context(open_clip(clip))
            ahead = _keyed_frames(again, fmt, TruthKeyframes(spec) if spec else None, painted,
                                  to_end=colorizer.key_model is not None)
            colorizer.read_ahead(itertools.islice(ahead, options.max_frames), fmt.work_format)
        meter = ClipMeter(fmt.matrix, options.ssim_every or ssim_stride(fmt.width, fmt.height))
        bar = progress(clip.path.name, _limit(fmt.frame_count, options.max_frames))
        try:
            keyed = _keyed_frames(frames, fmt, choose, painted)
            for batch in _batches(keyed, options.colorize.batch_size, options.max_frames):
                sources = [frame for frame, _ in batch]
                truths = [fmt.to_rgb(source) for source in sources]
                keys = {i: key for i, (_, key) in enumerate(batch) if key is not None}
                if choose is not None and choose.shots:
                    colorized = colorizer.colorize_frames(sources, fmt.work_format, shot_keyframes=keys)
                else:
                    colorized = colorizer.colorize_frames(sources, fmt.work_format, keys)
                for truth, out in zip(truths, colorized):
                    meter.add(fmt.to_rgb(out), truth)
                bar.update(len(batch))
        finally:
            bar.close()
    return _clip_scores(clip, None, fmt, meter)


def _fit_keyframes(clip: Clip, spec: str | None, painted: KeyframeSet | None, max_frames: int | None
                   ) -> Sequence[torch.Tensor]:
    """The keyframes a clip's colorizer is fitted to (``--keyframes-fit``): the painted ones, or the
    clip's own frames that ``spec`` ("first" or N) shows, thinned to about twice what a fit uses."""
    from colorvid.models.effnet_unet import FIT_MAX_KEYFRAMES

    if spec is None:
        assert painted is not None, "--keyframes-fit comes with keyframes"
        return painted.images()
    if spec == "shots":
        raise ValueError("--keyframes-fit needs the keyframes before the run; the shots are found during it")
    every = TruthKeyframes(spec).every
    kept: list[tuple[int, torch.Tensor]] = []
    stride = 1  # of the N-th frames, every stride-th is kept, doubled whenever too many are
    with open_clip(clip) as (fmt, frames):
        for index, frame in enumerate(itertools.islice(frames, max_frames)):
            if every is None and index > 0:
                break
            if every is not None and (index % every or (index // every) % stride):
                continue
            kept.append((index // (every or 1), fmt.to_rgb(frame)))
            if len(kept) > 2 * FIT_MAX_KEYFRAMES:
                stride *= 2
                kept = [(number, image) for number, image in kept if number % stride == 0]
    images = [image for _, image in kept]
    if painted is not None:
        return [*images, *painted.images()]
    return images


def _keyed_frames(frames: Iterator, fmt: _Format, choose: TruthKeyframes | None, painted: KeyframeSet | None,
                  to_end: bool = True) -> Iterator[tuple]:
    """Each frame with the keyframe shown for it (RGB (3, H, W) in 0..1), or None: its own picture
    where ``choose`` takes it, else a painted one. Without ``to_end``, painted keyframes alone end
    the frames after the last of them."""
    shown = painted.shown(frames, to_end or choose is not None) if painted is not None else ((f, None) for f in frames)
    for frame, key in shown:
        if choose is not None and choose(1):
            key = fmt.to_rgb(frame).float() / 255.0
        yield frame, key


class TruthKeyframes:
    """Which of a reference's frames are shown to the colorizer as keyframes (``--keyframes-from-truth``)."""

    def __init__(self, spec: str):
        """``spec``: "first", "shots" or a positive frame interval N (every N-th frame, from the first).

        Raises:
            ValueError: another spec.
        """
        self.shots = spec == "shots"  # the first frame of each shot, as the colorizer's cut detector finds them
        if spec in ("first", "shots"):
            self.every = None
        elif spec.isdigit() and int(spec) > 0:
            self.every = int(spec)
        else:
            raise ValueError(f"keyframes from truth: 'first', 'shots' or a frame interval N > 0, not {spec!r}")
        self._index = 0

    def __call__(self, count: int) -> list[int]:
        """The indices among the clip's next ``count`` frames to take as keyframes (all of them, as
        candidates for the shots' first frames, with "shots")."""
        start, self._index = self._index, self._index + count
        if self.shots:
            return list(range(count))
        every = self.every
        return [i for i in range(count) if (start + i == 0 if every is None else (start + i) % every == 0)]


def _score_existing(clip: Clip, output: Clip, options: EvaluateOptions, progress: ProgressFactory) -> ClipScores:
    with open_clip(clip) as (fmt, frames), open_clip(output) as (out_fmt, out_frames):
        if (out_fmt.width, out_fmt.height) != (fmt.width, fmt.height):
            raise InputError(f"{output.path}: is {out_fmt.width}x{out_fmt.height}, its reference {clip.path} is "
                             f"{fmt.width}x{fmt.height}")
        meter = ClipMeter(fmt.matrix, options.ssim_every or ssim_stride(fmt.width, fmt.height))
        bar = progress(clip.path.name, _limit(fmt.frame_count, options.max_frames))
        try:
            limit = options.max_frames if options.max_frames is not None else math.inf
            truth_left = out_left = 0
            truth_iter, out_iter = iter(frames), iter(out_frames)
            while meter.frames < limit:
                truth = next(truth_iter, None)
                out = next(out_iter, None)
                if truth is None or out is None:
                    truth_left, out_left = truth is not None, out is not None
                    break
                meter.add(out_fmt.to_rgb(out), fmt.to_rgb(truth))
                bar.update(1)
        finally:
            bar.close()
        if truth_left or out_left:
            longer, shorter = (clip.path, output.path) if truth_left else (output.path, clip.path)
            log.warning("%s has more frames than %s; compared the first %d", longer, shorter, meter.frames)
    return _clip_scores(clip, output, fmt, meter)


def _clip_scores(clip: Clip, output: Clip | None, fmt: _Format, meter: ClipMeter) -> ClipScores:
    scores = meter.scores()
    return ClipScores(
        reference=str(clip.path), colorized=None if output is None else str(output.path), frames=meter.frames,
        ssim_frames=meter.ssim_frames, width=fmt.width, height=fmt.height, matrix=fmt.matrix,
        output=scores["output"], gray=scores["gray"], truth=scores["truth"],
    )


def _limit(count: int | None, max_frames: int | None) -> int | None:
    if count is None:
        return max_frames
    return count if max_frames is None else min(count, max_frames)


def _batches(frames: Iterator, size: int, max_frames: int | None) -> Iterator[list]:
    batch: list = []
    taken = 0
    for frame in frames:
        if max_frames is not None and taken >= max_frames:
            break
        batch.append(frame)
        taken += 1
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _mean_over(clips: list[ClipScores]) -> dict[str, Scores]:
    """Each metric averaged over the clips that have it; the colorfulness ratio is the ratio of the means."""
    mean = {}
    for source in ("output", "gray", "truth"):
        values = {}
        for f in fields(Scores):
            got = [getattr(getattr(clip, source), f.name) for clip in clips]
            got = [v for v in got if v is not None]
            values[f.name] = sum(got) / len(got) if got else None
        mean[source] = Scores(**values)
    truth = mean["truth"].colorfulness
    for scores in mean.values():
        scores.colorfulness_ratio = _ratio(scores.colorfulness, truth)
    return mean


# --- reporting ----------------------------------------------------------------------------

_COLUMNS = (  # header, Scores field, format
    ("PSNR", "psnr", "{:.2f}"),
    ("SSIM", "ssim", "{:.4f}"),
    ("COLORFUL", "colorfulness", "{:.1f}"),
    ("RATIO", "colorfulness_ratio", "{:.2f}"),
    ("CDC", "cdc", "{:.4f}"),
    ("LUMA PSNR", "luma_psnr", "{:.2f}"),
)


def format_table(evaluation: Evaluation) -> str:
    """An aligned text table: per clip (and the mean) rows for the output, the gray baseline and the reference."""
    header = ("CLIP", "FRAMES", "SOURCE") + tuple(c[0] for c in _COLUMNS)
    rows: list[tuple[str, ...]] = [header]

    def add(name: str, frames: str, scores: dict[str, Scores]) -> None:
        for i, (label, source) in enumerate((("colorized", "output"), ("gray", "gray"), ("reference", "truth"))):
            s = scores[source]
            cells = ["-" if getattr(s, f) is None else fmt.format(getattr(s, f)) for _, f, fmt in _COLUMNS]
            rows.append((name if i == 0 else "", frames if i == 0 else "", label, *cells))

    for clip in evaluation.clips:
        frames = str(clip.frames) if clip.ssim_frames == clip.frames else f"{clip.frames} ({clip.ssim_frames} SSIM)"
        add(clip.reference, frames, {"output": clip.output, "gray": clip.gray, "truth": clip.truth})
    if len(evaluation.clips) > 1:
        add(f"mean of {len(evaluation.clips)}", str(sum(c.frames for c in evaluation.clips)), evaluation.mean)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for row in rows:
        left = [cell.ljust(w) for cell, w in zip(row[:3], widths[:3])]
        right = [cell.rjust(w) for cell, w in zip(row[3:], widths[3:])]
        lines.append("  ".join(left + right).rstrip())
    lines.append("PSNR and LUMA PSNR in dB (higher is better); CDC: color flicker (lower is steadier); "
                 "RATIO: colorfulness / the reference's.")
    return "\n".join(lines)
