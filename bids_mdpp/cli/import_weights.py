"""``bids_mdpp import-weights FILE.pth OUT_DIR --dataset umcl|isbi``: parsing only.

The conversion is :func:`bids_mdpp.convert.import_authors_weights`; torch is imported inside
the command so that ``--help`` stays instant.
"""
from __future__ import annotations

from pathlib import Path

import click

#: bids_mdpp.nn.MODES, spelled out so that --help does not import torch.
MODES = ("independent", "moddrop", "moddrop+", "moddrop++")


@click.command(
    name="import-weights",
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.argument("weights", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--dataset", type=click.Choice(["umcl", "isbi"], case_sensitive=False), required=True,
              help="What the weights were trained on: umcl (T1w, FLAIR, T2w, ceT1w) or isbi "
                   "(T1w, FLAIR, T2w, PDw).")
@click.option("--contrasts", help="Contrasts of an independent (single-subset) model, e.g. FLAIR,T2w.")
@click.option("--mode", type=click.Choice(MODES),
              help="Training mode for the card (default: moddrop++ if dynamic, else moddrop/independent).")
@click.option("--name", help="Model name for the card (default: authors-<mode>-<dataset>).")
@click.option("--force", is_flag=True, help="Replace a model already in OUT_DIR.")
def import_weights(weights: Path, out_dir: Path, dataset: str, contrasts: str | None,
                   mode: str | None, name: str | None, force: bool) -> None:
    """Turn the ModDrop++ authors' released weights (FILE.pth) into a model directory.

    The directory (model_card.json + model.pt) can then be used with `bids_mdpp ... --model OUT_DIR`.
    """
    from bids_mdpp.contrasts import parse_contrasts
    from bids_mdpp.convert import import_authors_weights
    from bids_mdpp.errors import UsageError
    from bids_mdpp.model import load_model

    try:
        chosen = parse_contrasts(contrasts) if contrasts else None
    except ValueError as exc:
        raise UsageError(f"--contrasts: {exc}") from exc
    directory = import_authors_weights(weights, out_dir, dataset, contrasts=chosen, mode=mode,
                                       name=name, overwrite=force)
    card = load_model(directory).card
    click.echo(
        f"Wrote model {card.name} ({card.mode}; contrasts {', '.join(card.contrasts)}) to {directory}"
    )
