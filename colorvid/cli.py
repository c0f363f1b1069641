"""Command line: parses options, calls the library, reports. No work is done here."""

from __future__ import annotations

import logging
import os
import sys

import click

from colorvid import __version__
from colorvid.errors import ColorizeError

log = logging.getLogger("colorvid")


class _State:
    verbose = False


def _setup_logging(verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if verbose else (logging.ERROR if quiet else logging.INFO)
    logging.basicConfig(level=level, format="colorvid: %(message)s", stream=sys.stderr, force=True)


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

# --- frames ------------------------------------------------------------------

# --- weights -----------------------------------------------------------------


@cli.command("weights")
def weights_cmd() -> int:
    """List the models colorvid knows: size, license, whether on disk, the default (*)."""
    from colorvid import weights

    registry = weights.load_registry()
    rows = weights.list_models(registry)
    if not rows:
        click.echo(f"colorvid: no models listed in {registry.path}", err=True)
        return 0
    table = [("NAME", "SIZE", "LICENSE", "INSTALLED", "DEFAULT", "DESCRIPTION")]
    for row in rows:
        table.append((row.name, f"{row.size / 1e6:.1f} MB", row.license, "yes" if row.installed else "no",
                      "*" if row.default else "", row.description))
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]) - 1)]
    for line in table:
        click.echo("  ".join([cell.ljust(width) for cell, width in zip(line, widths)] + [line[-1]]).rstrip())
    return 0


@cli.command("fetch-weights")
@click.argument("names", nargs=-1, metavar="[NAME]...")
@click.pass_context
def fetch_weights_cmd(ctx: click.Context, names: tuple[str, ...]) -> int:
    """Download models and verify their sha256 (no NAME: the default model).

    Files go to the Hugging Face cache (HF_HUB_CACHE, else HF_HOME/hub); HF_ENDPOINT
    selects a mirror. Prints the path of each verified file; exits 1 if any failed.
    """
    from colorvid import weights

    registry = weights.load_registry()
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


def main() -> None:
    try:
        status = cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("colorvid: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except ColorizeError as exc:
        if _State.verbose:
            raise
        click.echo(f"colorvid: error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("colorvid: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # an unexpected bug: still one line unless --verbose
        if _State.verbose:
            raise
        click.echo(f"colorvid: internal error: {type(exc).__name__}: {exc} (run with --verbose for details)", err=True)
        sys.exit(1)
    # commands return an int status (e.g. 1 when some files of a batch failed)
    sys.exit(status if isinstance(status, int) else 0)
