"""Command line: parses options, calls the library, reports. No work is done here."""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path

import click

from colorvid import __version__
from colorvid.errors import ColorizeError

log = logging.getLogger("colorvid")


class _State:
    verbose = False
    terminated = False  # SIGTERM arrived


class _ProgressSafeHandler(logging.StreamHandler):
    """Writes log lines above a progress bar instead of through it (tqdm.write)."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:
            self.handleError(record)


def _setup_logging(verbose: bool, quiet: bool) -> None:
    """colorvid's own messages at INFO (DEBUG with -v, errors only with -q); other libraries' from
    WARNING unless -v, so that huggingface_hub's HTTP client does not log every request of a download."""
    level = logging.DEBUG if verbose else (logging.ERROR if quiet else logging.INFO)
    handler = _ProgressSafeHandler(sys.stderr)
    if not verbose:
        handler.addFilter(_own_or_warning)
    logging.basicConfig(level=level, format="colorvid: %(message)s", handlers=[handler], force=True)


def _own_or_warning(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or record.name == "colorvid" or record.name.startswith("colorvid.")


def _set_verbosity(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        ctx.obj = dict(ctx.obj or {}, **{param.name: True})
        _State.verbose = _State.verbose or param.name == "verbose"
        _setup_logging(ctx.obj.get("verbose", False), ctx.obj.get("quiet", False))


def verbosity_options(command):
    """-v/-q accepted after the subcommand too: `colorvid colorize -q ...`."""
    command = click.option("-v", "--verbose", is_flag=True, expose_value=False, callback=_set_verbosity,
                           help="Log details and show tracebacks on errors.")(command)
    return click.option("-q", "--quiet", is_flag=True, expose_value=False, callback=_set_verbosity,
                        help="Only print errors; no progress bar.")(command)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="colorvid")
@click.option("-v", "--verbose", is_flag=True, help="Log details and show tracebacks on errors.")
@click.option("-q", "--quiet", is_flag=True, help="Only print errors; no progress bar.")
@click.pass_context
def cli(ctx: click.Context, verbose: bool, quiet: bool) -> None:
    """Colorize black-and-white video automatically."""
    _State.verbose = verbose or os.environ.get("COLORVID_DEBUG") == "1"
    ctx.obj = {"verbose": verbose, "quiet": quiet}
    _setup_logging(verbose, quiet)


# --- colorize --------------------------------------------------------------


MODEL_HELP = "Model name from 'colorvid weights', or a weights file (.safetensors, or a DDColor/DeOldify .pth)."
RENDER_SIZE_HELP = (
    "Size at which the network sees the frames, in its family's terms: colorvid models, the short side "
    "(default 256); DDColor, the side of the square input (default 512); DeOldify, the render factor "
    "(16x it is the square's side; default 35, deoldify-video 21)."
)


def model_option(command):
    return click.option("-m", "--model", default=None, help=MODEL_HELP)(command)


def device_option(command):
    return click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps.")(command)


def render_size_option(command):
    return click.option("--render-size", type=click.IntRange(min=1), default=None, help=RENDER_SIZE_HELP)(command)


def model_options(command):
    """--model, --device, --batch-size and --render-size, as colorize and evaluate take them."""
    command = render_size_option(command)
    command = click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)(command)
    return model_option(device_option(command))


def _truth_keyframes(param: click.Parameter, value: str | None) -> str | None:
    from colorvid.evaluate import TruthKeyframes

    if value is not None:
        try:
            TruthKeyframes(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param=param) from None
    return value


def _ranges_parser(name: str):
    """A click callback parsing an option with ``colorvid.ranges.<name>`` (ValueError: usage error)."""

    def callback(ctx: click.Context, param: click.Parameter, value: str | None):
        from colorvid import ranges

        if value is None:
            return None
        try:
            return getattr(ranges, name)(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param=param) from None

    return callback


def _tqdm_progress(quiet: bool):
    """A progress factory for the pipeline: tqdm on stderr when it is a terminal."""
    from tqdm import tqdm

    from colorvid.pipeline import Progress

    enabled = not quiet and sys.stderr.isatty()

    class _Bar(Progress):
        def __init__(self, name: str, total: int | None):
            self.bar = tqdm(total=total, desc=name, unit="frame", disable=not enabled, file=sys.stderr,
                            dynamic_ncols=True, leave=False)

        def update(self, frames: int) -> None:
            self.bar.update(frames)

        def close(self) -> None:
            self.bar.close()

    return _Bar


@cli.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
              help="Output file, or a folder when there are several inputs (or a folder/glob).")
@model_options
@click.option("--temporal", type=click.Choice(["none", "blend", "flow", "model"]), default=None,
              help="Steadier colors over time: 'blend' mixes in the previous frame's colors; 'flow' moves them "
                   "along the motion first and mixes only where they fit (no trails behind moving things); "
                   "'model' lets the model's previous-frame head decide that mix per pixel. "
                   "Resets at scene cuts. Default: model when the model has that head, else flow "
                   "(none with --smooth 0).")
@click.option("--smooth", type=click.FloatRange(0, 1), default=None,
              help="How much of the previous frame's color to keep, 0..1 (default 0.7 for flow, 0.5 for blend, "
                   "0.9 for model, where the head scales it per pixel; 0 = none).")
@click.option("--codec", default=None,
              help="Video codec (libx264, libvpx-vp9, ffv1, mjpeg, mpeg2video); default from the extension.")
@click.option("--crf", type=click.IntRange(0, 63), default=None,
              help="Quality for libx264 (default 18) and VP9 (default 32).")
@click.option("--preset", default=None, help="Encoder speed preset (libx264: ultrafast ... veryslow; default medium).")
@click.option("--pix-fmt", default=None, help="Output pixel format, e.g. yuv420p, yuv444p, yuv420p10le.")
@click.option("--half/--no-half", default=None, help="Half precision (default: on with CUDA only).")
@click.option("--overwrite", is_flag=True,
              help="Replace existing output files; start over instead of resuming an interrupted run.")
@click.option("--skip-existing", is_flag=True, help="Leave inputs whose output already exists.")
@click.option("--suffix", default=None,
              help="Container for outputs written into a folder, e.g. .mkv (default: the input's).")
@click.option("--resume", is_flag=True,
              help="Continue what an interrupted run left beside the output (in .OUTPUT.colorvid-work/).")
@click.option("--deinterlace", is_flag=True,
              help="Deinterlace (FFmpeg bwdif, one frame per frame); the output is progressive.")
@click.option("--segment", default=None, metavar="I/N", callback=_ranges_parser("parse_segment"),
              help="Colorize only part I of N equal parts of the film, into OUTPUT.partIofN/, for 'colorvid join'.")
@click.option("--range", "time_range", default=None, metavar="START-END", callback=_ranges_parser("parse_range"),
              help="Colorize only the frames from START to END seconds (or [H:]MM:SS; END empty = to the end), "
                   "into OUTPUT.partSTART-END/, for 'colorvid join'.")
@click.option("--chunk-seconds", type=click.FloatRange(min=0, min_open=True), default=4.0, show_default=True,
              help="Length of the independently encoded pieces: the most a resume redoes.")
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Append one JSON line per file (input, output, status, frames, seconds, error) to this file.")
@click.option("--keyframes", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="A folder of color keyframes (frame_NNNNNN.png/.jpg/.tif, NNNNNN the 1-based frame number, "
                   "e.g. painted from 'colorvid keyframes extract'): their colors are carried through their shots.")
@click.option("--keyframes-model", default=None, metavar="NAME|FILE",
              help="Color the first frame of each shot with this (slower, stronger) model and carry its colors "
                   "through the shot with the main model's pipeline, e.g. --keyframes-model ddcolor-artistic.")
@click.option("--keyframes-every", type=click.FloatRange(min=0, min_open=True), default=None, metavar="SECONDS",
              help="With --keyframes-model: also color a frame whenever this long has passed since the last "
                   "keyframe of its shot (as 'keyframes extract --every' picks them).")
@click.option("--keyframes-fit", is_flag=True,
              help="With --keyframes: first fit the model's color read-out to the keyframes (a second or two), so "
                   "that shots without a keyframe take the film's palette too. Every keyframe is trusted: one of "
                   "another film would color them all. colorvid models only.")
@verbosity_options
@click.pass_context
def colorize(ctx, inputs, output, model, device, batch_size, render_size, temporal, smooth, codec, crf, preset, pix_fmt,
             half, overwrite, skip_existing, suffix, resume, deinterlace, segment, time_range, chunk_seconds, report,
             keyframes, keyframes_model, keyframes_every, keyframes_fit):
    """Colorize videos (or still images).

    A run can be stopped at any time (Ctrl-C, kill, power loss) and continued
    with the same command plus --resume. Parts of a long film can be colorized
    on several machines (--segment, --range) and joined with 'colorvid join'.

    \b
    colorvid colorize old.mp4 -o new.mp4
    colorvid colorize films/ -o colorized/ --skip-existing --resume
    colorvid colorize film.mkv -o color.mkv --segment 2/8
    """
    from colorvid import pipeline
    from colorvid.smoothing import temporal_settings

    if overwrite and skip_existing:
        raise click.UsageError("--overwrite and --skip-existing exclude each other")
    if segment and time_range:
        raise click.UsageError("--segment and --range exclude each other")
    if (segment or time_range) and len(inputs) != 1:
        raise click.UsageError("--segment and --range take one input file")
    if keyframes is not None and (len(inputs) != 1 or os.path.isdir(inputs[0])):
        raise click.UsageError("--keyframes takes one input film (its keyframes are numbered by its frames)")
    if keyframes_every is not None and keyframes_model is None:
        raise click.UsageError("--keyframes-every goes with --keyframes-model")
    if keyframes_fit and keyframes is None:
        raise click.UsageError("--keyframes-fit goes with --keyframes (the keyframes to fit to)")
    try:
        temporal_settings(temporal, smooth, has_head=True)  # the model's own default is settled when it is loaded
    except ValueError as exc:
        raise click.UsageError(f"--temporal and --smooth: {exc}") from None
    if suffix is not None and not suffix.startswith("."):
        suffix = "." + suffix
    options = pipeline.ColorizeOptions(
        model=model, device=device, batch_size=batch_size, render_size=render_size, smooth=smooth, temporal=temporal,
        half=half, codec=codec, crf=crf, preset=preset, pix_fmt=pix_fmt, overwrite=overwrite,
        skip_existing=skip_existing, suffix=suffix, resume=resume, chunk_seconds=chunk_seconds,
        deinterlace="bwdif" if deinterlace else None, segment=segment, time_range=time_range, keyframes=keyframes,
        keyframes_model=keyframes_model, keyframes_every=keyframes_every, keyframes_fit=keyframes_fit,
    )

    def tell(result: pipeline.FileResult) -> None:
        if result.status == "failed":
            click.echo(f"colorvid: error: {result.error}", err=True)
        elif result.status == "ok":
            log.info("%s -> %s (%d frames, %.1f s)", result.input, result.output, result.frames, result.seconds)

    results = pipeline.colorize_files(list(inputs), output, options, progress=_tqdm_progress(ctx.obj["quiet"]),
                                      report=report, on_result=tell)
    failed = sum(result.status == "failed" for result in results)
    if failed and len(results) > 1:
        click.echo(f"colorvid: {failed} of {len(results)} files failed", err=True)
    return 1 if failed else 0


@cli.command()
@click.argument("parts", nargs=-1, required=True, type=click.Path(path_type=Path), metavar="PART...")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="The film to write.")
@click.option("--source", type=click.Path(path_type=Path), default=None,
              help="The original film, for audio, subtitles and other streams (default: the file the parts were "
                   "made from; it must be the same file).")
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists.")
@click.option("--keep-parts", is_flag=True, help="Keep the part folders (default: removed once OUTPUT is written).")
@verbosity_options
def join(parts, output, source, overwrite, keep_parts):
    """Join parts made by 'colorize --segment' or '--range' into one film, without re-encoding.

    The parts must together hold the whole film (every frame once); the
    audio, subtitles and other streams come from the original.

    \b
    colorvid join color.mkv.part*of8 -o color.mkv
    """
    from colorvid.chunks import join as join_parts

    unique = list(dict.fromkeys(Path(os.path.abspath(p)) for p in parts))
    frames = join_parts(unique, output, source, overwrite=overwrite, keep_parts=keep_parts)
    log.info("%s: %d frames from %d parts", output, frames, len(unique))


# --- train -------------------------------------------------------------------


@cli.command()
@click.argument("data", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--out-dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for checkpoints, history and best.safetensors; an existing run there is resumed.")
@click.option("--init", default="imagenet", show_default=True,
              help="'imagenet' (needs the train extra), 'none', or a colorvid model file to fine-tune.")
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=2), default=16, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True)
@click.option("--size", type=click.IntRange(min=64), default=224, show_default=True,
              help="Crop size in pixels (a multiple of 32).")
@click.option("--val-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.05,
              show_default=True)
@click.option("--video-step", type=click.IntRange(min=1), default=10, show_default=True,
              help="Use every k-th frame of video files.")
@click.option("--loss", type=click.Choice(["huber", "mse"]), default="huber", show_default=True,
              help="Regression loss on ab: huber is more vivid, mse scores higher PSNR "
                   "and is more cautious with color.")
@click.option("--balance", is_flag=True,
              help="Sample each DATA folder in proportion to the square root of its size, so a small folder "
                   "(your own footage) is not drowned by a big one.")
@click.option("--white-balance", is_flag=True,
              help="Take out each training image's color cast (from its light, nearly gray pixels) so white "
                   "and gray surfaces are learned as neutral, not as the warm tint most photos carry.")
@click.option("--previous-frame", is_flag=True,
              help="Train the previous-frame head of the --init model (which stays as it is) on consecutive frames: "
                   "video files, vid-<source>-<sequence>-<frame> images, and synthetic motion made from stills.")
@click.option("--confidence", is_flag=True,
              help="Train the confidence head of the --init model (which stays as it is): it mutes colors where the "
                   "model's classification head is torn between hues. The read-out's gain is chosen on the "
                   "validation images.")
@click.option("--beta", type=click.FloatRange(0, 1), default=0.8, show_default=True,
              help="With --previous-frame: weight of the error against the truth; the rest ties each output "
                   "to the previous one.")
@verbosity_options
@click.pass_context
def train(ctx, data, out_dir, init, epochs, batch_size, lr, size, val_fraction, video_step, loss, balance,
          white_balance, previous_frame, confidence, beta):
    """Train or fine-tune a colorizer on folders of color images and videos.

    Example: colorvid train ~/photos ~/newsreels -o runs/mine --init colorvid-base

    Example: colorvid train ~/newsreels -o runs/steady --init runs/mine/best.safetensors --previous-frame

    After fine-tuning a model that has a confidence head, retrain that head (--confidence) and then the
    previous-frame head, in that order: each learns from the model beneath it.
    """
    from colorvid.training import TrainOptions, train_confidence, train_previous_frame
    from colorvid.training import train as train_colorizer

    if size % 32:
        raise click.BadParameter("must be a multiple of 32", param_hint="--size")
    if previous_frame and confidence:
        raise click.UsageError("--previous-frame and --confidence train different heads: run them one after the other")
    for flag, name in ((previous_frame, "--previous-frame"), (confidence, "--confidence")):
        if flag and init in ("imagenet", "none"):
            raise click.UsageError(f"{name} trains on top of a colorvid model: pass --init MODEL")
    if init not in ("imagenet", "none"):
        from colorvid.registry import load_registry
        from colorvid.weights import resolve

        init = str(resolve(init, load_registry()))
    options = TrainOptions(
        data=tuple(data), out_dir=out_dir, epochs=epochs, batch_size=batch_size, lr=lr, size=size,
        init=init, val_fraction=val_fraction, video_step=video_step, loss=loss, balance=balance,
        white_balance=white_balance,
    )
    show_progress = not ctx.obj["quiet"] and sys.stderr.isatty()
    if previous_frame:
        best = train_previous_frame(options, beta=beta, progress=show_progress)
    elif confidence:
        best = train_confidence(options, progress=show_progress)
    else:
        best = train_colorizer(options, progress=show_progress)
    click.echo(str(best))


# --- evaluate ----------------------------------------------------------------


@cli.command()
@click.argument("references", nargs=-1, required=True, metavar="REFERENCE...")
@click.option("--colorized", type=click.Path(exists=True, path_type=Path), default=None,
              help="Score these outputs instead of colorizing: the output of one reference (file or frame folder), "
                   "or a folder holding each reference's output under the reference's name (any extension).")
@model_options
@click.option("--temporal", type=click.Choice(["none", "blend", "flow", "model"]), default=None,
              help="Temporal smoothing mode, as in 'colorize'.")
@click.option("--smooth", type=click.FloatRange(0, 1), default=None,
              help="Temporal smoothing strength, as in 'colorize'.")
@click.option("--max-frames", type=click.IntRange(min=1), default=None, help="Score at most N frames of each clip.")
@click.option("--ssim-every", type=click.IntRange(min=1), default=None,
              help="SSIM on every N-th frame (SSIM is slow). Default: every frame up to 640x360, "
                   "every k-th frame above, k growing with the pixel count (9 at 1080p).")
@click.option("--keyframes-from-truth", "truth_keys", default=None, metavar="first|shots|N",
              callback=lambda ctx, param, value: _truth_keyframes(param, value),
              help="Give the colorizer some of the references' own frames as keyframes, as a colorist's: "
                   "the first frame, the first of each shot, or every N-th frame.")
@click.option("--keyframes", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="As in 'colorize': a folder of painted keyframes for the (one) reference.")
@click.option("--keyframes-model", default=None, metavar="NAME|FILE",
              help="As in 'colorize': this model colors the first frame of each shot, carried through the shot.")
@click.option("--keyframes-every", type=click.FloatRange(min=0, min_open=True), default=None, metavar="SECONDS",
              help="As in 'colorize': with --keyframes-model, one more keyframe whenever this long has passed.")
@click.option("--keyframes-fit", is_flag=True,
              help="As in 'colorize': fit the model's read-out to each clip's keyframes first (painted ones, or "
                   "--keyframes-from-truth first or N).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (per clip and the mean) instead of a table.")
@verbosity_options
@click.pass_context
def evaluate(ctx, references, colorized, model, device, batch_size, render_size, temporal, smooth, max_frames,
             ssim_every, truth_keys, keyframes, keyframes_model, keyframes_every, keyframes_fit, as_json):
    """Score colorization against the color originals, beside a gray baseline.

    A REFERENCE is a color video, a folder of frames (images in name order),
    or a folder of those. Without --colorized, each reference's luma is
    colorized with the model and settings given (nothing is written).

    \b
    Per clip and the mean over clips, for the colorized output and for the
    gray baseline (the reference's luma with no color):
      PSNR       RGB, per frame, then averaged (identical frames count 100 dB)
      SSIM       scikit-image, over the three channels (see --ssim-every)
      COLORFUL   Hasler & Suesstrunk colorfulness; RATIO: / the reference's
      CDC        color distribution consistency (Liu et al.): Jensen-Shannon
                 divergence of RGB histograms of frames 1, 2 and 4 apart;
                 lower is steadier
      LUMA PSNR  the output's luma against the input's: the colorizer keeps it
    Luma is Y' with the clip's own matrix (BT.601 for SD video and images).

    \b
    colorvid evaluate clips/ --model colorvid-base --json
    colorvid evaluate clips/ --colorized colorized/
    """
    import json

    from colorvid.evaluate import EvaluateOptions, format_table
    from colorvid.evaluate import evaluate as run_evaluation
    from colorvid.pipeline import ColorizeOptions
    from colorvid.smoothing import temporal_settings

    try:
        temporal_settings(temporal, smooth, has_head=True)  # the model's own default is settled when it is loaded
    except ValueError as exc:
        raise click.UsageError(f"--temporal and --smooth: {exc}") from None
    if keyframes is not None and (len(references) != 1 or colorized is not None):
        raise click.UsageError("--keyframes takes one reference video and no --colorized")
    if keyframes_every is not None and keyframes_model is None:
        raise click.UsageError("--keyframes-every goes with --keyframes-model")
    if keyframes_fit and (colorized is not None or truth_keys == "shots" or (keyframes is None and truth_keys is None)):
        raise click.UsageError("--keyframes-fit needs keyframes known before the run: --keyframes, or "
                               "--keyframes-from-truth first or N")

    options = EvaluateOptions(
        colorize=ColorizeOptions(model=model, device=device, batch_size=batch_size, render_size=render_size,
                                 smooth=smooth, temporal=temporal, keyframes_model=keyframes_model,
                                 keyframes_every=keyframes_every),
        max_frames=max_frames, ssim_every=ssim_every, keyframes_from_truth=truth_keys, keyframes=keyframes,
        keyframes_fit=keyframes_fit,
    )
    result = run_evaluation(list(references), colorized, options, progress=_tqdm_progress(ctx.obj["quiet"]))
    click.echo(json.dumps(result.to_dict(), indent=2, allow_nan=False) if as_json else format_table(result))


# --- preview -----------------------------------------------------------------


@cli.command()
@click.argument("input_path", metavar="INPUT")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Image to write, e.g. sheet.png.")
@click.option("--frames", "count", type=click.IntRange(1, 100), default=6, show_default=True,
              help="How many frames, evenly spaced over the video.")
@click.option("--truth", is_flag=True, help="Add a row with the input's own colors (for a color reference).")
@model_option
@device_option
@render_size_option
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists.")
@verbosity_options
def preview(input_path, output, count, truth, model, device, render_size, overwrite):
    """Write a contact sheet of a few frames: the gray input above the colorized frames.

    The top row is the luma (all the model sees), the second row the
    colorized frames, and with --truth a third row the input's own colors.
    Only the frames shown are decoded. The sheet is at most 2000 pixels wide.

    \b
    colorvid preview film.mp4 -o sheet.png --frames 8
    """
    from colorvid.pipeline import ColorizeOptions
    from colorvid.preview import PreviewOptions, make_preview

    options = PreviewOptions(frames=count, truth=truth, overwrite=overwrite,
                             colorize=ColorizeOptions(model=model, device=device, render_size=render_size))
    sheet = make_preview(input_path, output, options)
    times = ", ".join(f"{t:.2f}" for t in sheet.times)
    log.info("%s: %dx%d, frames at %s s", sheet.path, sheet.width, sheet.height, times)


# --- frames ------------------------------------------------------------------


@cli.group()
def frames() -> None:
    """Extract a video to numbered images, or stitch images back into a video.

    \b
    colorvid frames extract old.mp4 work/
    (edit or colorize work/frame_*.png with any tool)
    colorvid frames stitch work/ -o new.mp4
    """


@frames.command("extract")
@click.argument("input_path", metavar="INPUT")
@click.argument("directory", metavar="DIR")
@click.option("--format", "image_format", type=click.Choice(["png", "jpg", "tiff"]), default="png", show_default=True,
              help="png and tiff are lossless (16 bits per channel for >8-bit video).")
@click.option("--overwrite", is_flag=True, help="Replace frames extracted into DIR before.")
@verbosity_options
def frames_extract(input_path: str, directory: str, image_format: str, overwrite: bool) -> None:
    """Write every frame of INPUT as an image in DIR, plus manifest.json.

    Frames are named frame_000001.png, frame_000002.png, ... The manifest
    keeps each frame's timestamp and the video's properties, so 'frames
    stitch' can rebuild the video with the original timing and sound.
    """
    from colorvid.frames import extract_frames

    count = extract_frames(input_path, directory, image_format, overwrite=overwrite)
    log.info("%s: %d frames written to %s", input_path, count, directory)


@frames.command("stitch")
@click.argument("directory", metavar="DIR")
@click.option("-o", "--output", required=True, help="Video file to write; its extension picks the container.")
@click.option("--audio-from", default=None,
              help="Take audio and subtitles from this file instead of the video the frames came from.")
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists.")
@click.option("--codec", default=None,
              help="Video codec (libx264, libvpx-vp9, ffv1, mjpeg, mpeg2video); default from the extension.")
@click.option("--crf", type=click.IntRange(0, 63), default=None,
              help="Quality for libx264 (default 18) and VP9 (default 32).")
@click.option("--preset", default=None, help="Encoder speed preset (libx264: ultrafast ... veryslow; default medium).")
@click.option("--pix-fmt", default=None, help="Output pixel format, e.g. yuv420p, yuv444p, yuv420p10le.")
@verbosity_options
def frames_stitch(directory: str, output: str, audio_from: str | None, overwrite: bool, codec: str | None,
                  crf: int | None, preset: str | None, pix_fmt: str | None) -> None:
    """Encode the images listed in DIR/manifest.json into OUTPUT.

    Frames keep their original timestamps; audio and subtitles come from the
    source video (or --audio-from). Every listed image must exist and keep
    the video's size.
    """
    from colorvid.frames import stitch_frames
    from colorvid.io import EncodeOptions

    options = EncodeOptions(codec=codec, crf=crf, preset=preset, pix_fmt=pix_fmt, overwrite=overwrite)
    count = stitch_frames(directory, output, options, audio_from=audio_from)
    log.info("%s: %d frames written", output, count)


# --- keyframes ---------------------------------------------------------------


@cli.group()
def keyframes() -> None:
    """Pick the frames of a film to color by hand: one per shot.

    \b
    colorvid keyframes extract film.mp4 keys/ --every 10
    """


@keyframes.command("extract")
@click.argument("film", metavar="FILM")
@click.argument("directory", metavar="DIR")
@click.option("--every", type=click.FloatRange(min=0, min_open=True), default=None, metavar="SECONDS",
              help="Also take a frame whenever SECONDS have passed since the shot's last keyframe.")
@click.option("--format", "image_format", type=click.Choice(["png", "jpg", "tiff"]), default="png", show_default=True,
              help="png and tiff are lossless (16 bits per channel for >8-bit video).")
@click.option("--overwrite", is_flag=True, help="Replace frames extracted into DIR before.")
@verbosity_options
def keyframes_extract(film: str, directory: str, every: float | None, image_format: str, overwrite: bool) -> None:
    """Write one frame per shot of FILM into DIR.

    The first frame of every shot (found by the scene-cut detector colorize
    uses), and with --every more in long shots, become images named as
    'frames extract' names them (frame_000001.png is the film's first
    frame), plus manifest.json with each keyframe's timestamp, frame index,
    time and shot.
    """
    from colorvid.keyframes import extract_keyframes

    found = extract_keyframes(film, directory, every=every, image_format=image_format, overwrite=overwrite)
    shots = len({keyframe.shot for keyframe in found})
    log.info("%s: %s (%s) of %s", directory, _count(len(found), "keyframe"), _count(shots, "shot"), film)


# --- weights -----------------------------------------------------------------


@cli.command("weights")
@verbosity_options
def weights_cmd() -> int:
    """List the models colorvid knows: family, size, speed, license, whether on disk, the default (*).

    SPEED is the class of frames/s end to end at 480p on a 2-core laptop CPU:
    real-time (24 and more), fast (4 and more), slow (0.2 and more), very slow.
    A hub model is downloaded with 'colorvid fetch-weights NAME'.
    """
    from colorvid import weights
    from colorvid.registry import load_registry

    registry = load_registry()
    rows = weights.list_models(registry)
    if not rows:
        click.echo(f"colorvid: no models listed in {registry.path}", err=True)
        return 0
    table = [("NAME", "FAMILY", "SIZE", "SPEED", "LICENSE", "CACHED", "DEFAULT", "DESCRIPTION")]
    for row in rows:
        size = f"{row.size / 1e6:.1f} MB" if row.size is not None else "?"
        table.append((row.name, row.family, size, row.speed or "?", _short_license(row.license),
                      "yes" if row.installed else "no", "*" if row.default else "", row.description))
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]) - 1)]
    for line in table:
        click.echo("  ".join([cell.ljust(width) for cell, width in zip(line, widths)] + [line[-1]]).rstrip())
    return 0


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _short_license(text: str) -> str:
    """The license as a table cell: its first clause."""
    return text.split(" (")[0].split(";")[0]


@cli.command("fetch-weights")
@click.argument("names", nargs=-1, metavar="[NAME]...")
@verbosity_options
@click.pass_context
def fetch_weights_cmd(ctx: click.Context, names: tuple[str, ...]) -> int:
    """Download models and verify their sha256 (no NAME: the default model).

    Files go to the Hugging Face cache (HF_HUB_CACHE, else HF_HOME/hub); HF_ENDPOINT
    selects a mirror. Prints the path of each verified file; exits 1 if any failed.
    """
    from colorvid import weights
    from colorvid.registry import load_registry

    registry = load_registry()
    failed = 0
    for name in names or (registry.default_name(),):
        try:
            path = weights.fetch(name, registry, progress=not ctx.obj["quiet"])
        except ColorizeError as exc:
            if _State.verbose:
                raise
            click.echo(f"colorvid: error: {exc}", err=True)
            failed += 1
            continue
        click.echo(str(path))
    return 1 if failed else 0


def _terminate(signum, frame) -> None:
    """SIGTERM stops a run as Ctrl-C does: temporary files go, resumable work stays."""
    _State.terminated = True
    raise KeyboardInterrupt


def _interrupted() -> None:
    if _State.terminated:
        click.echo("colorvid: terminated", err=True)
        sys.exit(128 + signal.SIGTERM)
    click.echo("colorvid: interrupted", err=True)
    sys.exit(130)


def main() -> None:
    _State.terminated = False
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        _main()
    finally:
        signal.signal(signal.SIGTERM, previous)


def _main() -> None:
    try:
        status = cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        _interrupted()
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except ColorizeError as exc:
        if _State.verbose:
            raise
        click.echo(f"colorvid: error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        _interrupted()
    except Exception as exc:  # an unexpected bug: still one line unless --verbose
        if _State.verbose:
            raise
        click.echo(f"colorvid: internal error: {type(exc).__name__}: {exc} (run with --verbose for details)", err=True)
        sys.exit(1)
    # commands return an int status (e.g. 1 when some files of a batch failed)
    sys.exit(status if isinstance(status, int) else 0)
