"""The ``bids_mdpp`` command line.

``bids_mdpp BIDS_DIR OUTPUT_DIR {participant,group} [OPTIONS]`` is the BIDS-App call; a first
argument that names a subcommand (``train``, ``adapt``, ``synth``, ``calibrate``,
``import-weights``, ``average-weights``) dispatches to it.
Heavy libraries are imported inside the commands so that ``--help`` is instant.

Exit codes follow the BIDS-Apps execution specification (see :mod:`bids_mdpp.errors`); click's
usage errors (2) become 64.
"""
from __future__ import annotations

import importlib
import sys

import click

from bids_mdpp import __version__
from bids_mdpp.errors import EXIT_USAGE, BidsMdppError

#: Subcommands, loaded on first use: name → "module:attribute".
SUBCOMMANDS: dict[str, str] = {
    "run": "bids_mdpp.cli.run:run",
    "train": "bids_mdpp.cli.train:train",
    "adapt": "bids_mdpp.cli.adapt:adapt",
    "synth": "bids_mdpp.cli.synth:synth",
    "calibrate": "bids_mdpp.cli.calibrate:calibrate",
    "import-weights": "bids_mdpp.cli.import_weights:import_weights",
    "average-weights": "bids_mdpp.cli.average_weights:average_weights",
}


class BidsAppGroup(click.Group):
    """A group whose default command is the BIDS-App call (``run``)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in SUBCOMMANDS if name != "run"]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = SUBCOMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or args[0] in ("-h", "--help"):
            args = ["run", "--help"]
        elif args[0] != "--version" and args[0] not in SUBCOMMANDS:
            args = ["run", *expand_label_lists(args)]
        elif args[0] in ("train", "calibrate", "adapt"):
            args = [args[0], *expand_label_lists(args[1:])]
        return super().parse_args(ctx, args)


#: Options that take a space-separated list, as in the BIDS-Apps specification.
LIST_OPTIONS = ("--participant-label", "--participant_label", "--session-label", "--session_label",
                "--output-spaces", "--output_spaces")


def expand_label_lists(args: list[str]) -> list[str]:
    """``--participant-label 01 02`` → ``--participant-label 01 --participant-label 02``.

    Values are taken up to the next token that starts with ``-``; positional arguments must
    therefore come before such a list (as with fMRIPrep).
    """
    out: list[str] = []
    current: str | None = None
    values_seen = 0
    for token in args:
        if token.startswith("-"):
            if current is not None and values_seen == 0:
                raise click.UsageError(f"Option '{current}' requires at least one value.")
            current = token if token in LIST_OPTIONS else None
            values_seen = 0
            if current is None:
                out.append(token)
            continue
        if current is not None:
            out.extend([current, token])
            values_seen += 1
            continue
        out.append(token)
    if current is not None and values_seen == 0:
        raise click.UsageError(f"Option '{current}' requires at least one value.")
    return out


@click.group(
    cls=BidsAppGroup,
    context_settings={"help_option_names": ["-h", "--help"]},
    invoke_without_command=False,
)
@click.version_option(__version__, "--version", prog_name="bids_mdpp", message="%(prog)s %(version)s")
def cli() -> None:
    """bids_mdpp: MS lesion segmentation from any subset of MRI contrasts (ModDrop++)."""


#: Commands that run the network and gain from the tuned allocator (see bids_mdpp.allocator).
HEAVY_FIRST_ARGS = ("train", "calibrate", "adapt")


def console_entry() -> None:
    """The ``bids_mdpp`` console script: tune the allocator for heavy runs, then :func:`main`."""
    args = sys.argv[1:]
    heavy = bool(args) and not {"-h", "--help", "--version"} & set(args) and (
        args[0] in HEAVY_FIRST_ARGS or args[0] not in SUBCOMMANDS
    )
    if heavy:
        from bids_mdpp.allocator import reexec_with_tuned_allocator

        reexec_with_tuned_allocator(args)
    main(args)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the CLI and exit with the BIDS-Apps exit code."""
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        code = cli.main(args, prog_name="bids_mdpp", standalone_mode=False, obj={"argv": args})
    except click.UsageError as exc:
        exc.show()
        code = EXIT_USAGE
    except click.ClickException as exc:
        exc.show()
        code = exc.exit_code if exc.exit_code != 2 else EXIT_USAGE
    except click.Abort:
        click.echo("Aborted.", err=True)
        code = 130
    except BidsMdppError as exc:
        click.echo(f"bids_mdpp: error: {exc}", err=True)
        code = exc.exit_code
    sys.exit(code if isinstance(code, int) else 0)
