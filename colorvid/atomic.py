"""Atomic file output: a file appears under its name only once it is complete.

Everything colorvid writes (videos, images, manifests, chunks, checkpoints,
registries) goes to a temporary file beside the target, named
``.NAME.colorvid-tmp-XXXXXXXX.EXT``, is flushed to disk, and is renamed over
the target. A run that is killed leaves at most such a temporary file, which
:func:`is_temporary` recognizes, so no later run takes it for a real input.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TEMP_MARK = ".colorvid-tmp-"


def is_temporary(path: str | os.PathLike) -> bool:
    """Is this a temporary file of colorvid's (a write that has not finished)?

    Older versions named still images' temporaries ``.NAME.colorvid-tmp.EXT``; those count too.
    """
    name = Path(path).name
    return name.startswith(".") and TEMP_MARK.rstrip("-") in name


def temp_pattern(target: str | os.PathLike) -> str:
    """A glob (escaped) matching the temporary files of ``target``."""
    import glob

    target = Path(target)
    return f".{glob.escape(target.stem)}{TEMP_MARK}*{glob.escape(target.suffix)}"


def create_temp(target: str | os.PathLike) -> Path:
    """Create an empty temporary file beside ``target`` (never an existing one) and return its path.

    Raises:
        OSError: the folder cannot take a new file.
    """
    target = Path(target)
    while True:
        temp = target.with_name(f".{target.stem}{TEMP_MARK}{secrets.token_hex(4)}{target.suffix}")
        try:
            os.close(os.open(temp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return temp
        except FileExistsError:
            continue


def fsync_file(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename in ``path`` durable; a file system that cannot is left as it is."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def commit(temp: str | os.PathLike, target: str | os.PathLike) -> None:
    """Flush ``temp`` to disk and rename it over ``target``, durably."""
    fsync_file(temp)
    os.replace(temp, target)
    fsync_dir(Path(target).parent)


@contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """A temporary path to write ``target``'s content to; renamed over ``target`` when the block
    ends without an exception, deleted otherwise (Ctrl-C included).

    A symbolic link at ``target`` is written through, not replaced.
    """
    target = Path(os.path.realpath(target)) if os.path.islink(target) else Path(target)
    temp = create_temp(target)
    try:
        yield temp
        commit(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def write_bytes(target: str | os.PathLike, data: bytes) -> None:
    with atomic_path(target) as temp:
        temp.write_bytes(data)


def write_text(target: str | os.PathLike, text: str) -> None:
    write_bytes(target, text.encode("utf-8"))
