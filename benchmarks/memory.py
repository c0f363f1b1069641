"""Peak memory of `colorvid colorize` on a short and a long 720p input: it should not grow with length.

    python benchmarks/memory.py                      # 1-minute and 10-minute inputs
    python benchmarks/memory.py --minutes 0.1,0.5    # a quick check

The inputs are a 10-second synthetic black-and-white clip (H.264 + AAC)
repeated by copying packets, so a long one costs no encoding. Each run is
`python -m colorvid colorize` in its own process; its peak resident set
size is the kernel's ``ru_maxrss`` for that child (``os.wait4``), and its
RSS is sampled from /proc while it runs to show any growth. The two peaks
and their ratio (about 1.0 when memory is flat with length) are printed
with the target of at most 1.5 GB.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import _common

TARGET_BYTES = 1.5 * 2**30
CHUNK_SECONDS = 10.0
SAMPLE_SECONDS = 0.2


def rss_bytes(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def run_measured(command: list[str]) -> tuple[int, float, list[tuple[float, int]]]:
    """(peak RSS in bytes, seconds, [(seconds, RSS bytes)] samples) of a child process."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(_common.REPO), os.environ.get("PYTHONPATH")])))
    start = time.perf_counter()
    child = subprocess.Popen(command, env=env)
    samples = []
    while True:
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            break
        rss = rss_bytes(child.pid)
        if rss is not None:
            samples.append((time.perf_counter() - start, rss))
        time.sleep(SAMPLE_SECONDS)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"colorize failed (exit {child.returncode}): {' '.join(command)}")
    return usage.ru_maxrss * 1024, time.perf_counter() - start, samples  # ru_maxrss is in KiB on Linux


def growth(samples: list[tuple[float, int]]) -> str:
    """RSS at 25/50/75/100 % of the run (after start-up), in MiB."""
    if len(samples) < 4:
        return "too short to sample"
    picks = [samples[min(len(samples) - 1, int(len(samples) * q))][1] for q in (0.25, 0.5, 0.75, 1.0)]
    return " -> ".join(f"{p / 2**20:.0f}" for p in picks) + " MiB"


def main() -> None:
    assert __doc__ is not None
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    _common.add_pipeline_arguments(parser)
    parser.add_argument("--minutes", default="1,10", help="lengths of the short and the long input")
    parser.add_argument("--workdir", help="keep the inputs and outputs here (default: a temporary folder)")
    args = parser.parse_args()
    lengths = [float(m) for m in args.minutes.split(",")]
    if len(lengths) != 2:
        parser.error("--minutes takes two lengths, e.g. 1,10")

    workdir, _keep = _common.work_folder(args.workdir)
    model = _common.resolve_model(args.model, workdir)
    width, height = _common.RESOLUTIONS["720p"]
    chunk_seconds = min(CHUNK_SECONDS, min(lengths) * 60)
    chunk = workdir / f"chunk-720p-{chunk_seconds:g}s.mp4"
    print(f"synthesizing {chunk.name} ...", flush=True)
    _common.synthesize_clip(chunk, width, height, chunk_seconds)

    results = []
    for minutes in lengths:
        repeats = max(1, round(minutes * 60 / chunk_seconds))
        source = workdir / f"input-720p-{repeats * chunk_seconds:g}s.mp4"
        _common.repeat_clip(chunk, source, repeats)
        command = [sys.executable, "-m", "colorvid", "-q", "colorize", str(source), "-o",
                   str(workdir / f"out-{source.stem}.mp4"), "--overwrite", "--device", args.device,
                   "--batch-size", str(args.batch_size)]
        if args.render_size is not None:
            command += ["--render-size", str(args.render_size)]
        if model is not None:
            command += ["--model", model]
        print(f"colorizing {source.name} ({repeats * chunk_seconds / 60:g} min) ...", flush=True)
        peak, seconds, samples = run_measured(command)
        frames = round(repeats * chunk_seconds * _common.FPS)
        results.append((minutes, peak))
        print(f"  peak RSS {peak / 2**30:.3f} GiB in {seconds:.0f} s ({frames / seconds:.2f} frames/s); "
              f"RSS over the run: {growth(samples)}", flush=True)

    (short, short_peak), (long, long_peak) = results
    print()
    for minutes, peak in results:
        verdict = "ok" if peak <= TARGET_BYTES else "MISSED"
        print(f"{minutes:g} min 720p: peak RSS {peak / 2**30:.3f} GiB (target <= 1.5 GiB: {verdict})")
    print(f"ratio {long:g} min / {short:g} min: {long_peak / short_peak:.3f} (1.0 = flat with length)")


if __name__ == "__main__":
    main()
