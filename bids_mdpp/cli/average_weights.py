"""``bids_mdpp average-weights OUT_DIR MODEL_DIR MODEL_DIR...``: parsing only.

The averaging is :func:`bids_mdpp.averaging.write_average`; torch is imported inside the
command so that ``--help`` stays instant.
"""
from __future__ import annotations

from pathlib import Path

import click


@click.command(
    name="average-weights",
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.argument("models", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--weights", metavar="W1,W2,...",
              help="One weight per model (default: equal); they are normalised to add up to 1.")
@click.option("--name", default="averaged", show_default=True, help="Model name for the card.")
@click.option("--threshold", type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True),
              default=0.5, show_default=True,
              help="Probability threshold of the averaged model (per-subset thresholds of the "
                   "members are not carried over: calibrate the average with `bids_mdpp calibrate`).")
@click.option("--force", is_flag=True, help="Replace a model already in OUT_DIR.")
def average_weights(out_dir: Path, models: tuple[Path, ...], weights: str | None, name: str,
                    threshold: float, force: bool) -> None:
    """Write to OUT_DIR one model whose weights are the mean of MODELS' weights.

    The models must share contrasts, mode, network, grid and normalisation, and should be
    fine-tuned from one starting model (e.g. with `bids_mdpp train --init-from`); the card
    lists them with their sha256.  Measure the average before use: its metrics are empty.
    """
    from bids_mdpp.averaging import parse_weights, write_average

    parsed = None if weights is None else parse_weights(weights, len(models))
    directory = write_average(out_dir, list(models), parsed, name=name, threshold=threshold,
                              overwrite=force)
    click.echo(f"Wrote model {name} (mean of {len(models)} models) to {directory}")
