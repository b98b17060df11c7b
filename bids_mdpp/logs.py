"""Logging to the console and to ``OUTPUT_DIR/logs/``, and crash files for failed sessions."""
from __future__ import annotations

import datetime as _dt
import logging
import os
import traceback
from pathlib import Path

from bids_mdpp.imageio import write_text

LOGGER = logging.getLogger("bids_mdpp")
FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def timestamp() -> str:
    """``20261125-101502`` (local time), used in log and crash-file names."""
    return _dt.datetime.now().strftime("%Y%m%d-%H%M%S")


def setup_logging(log_dir: Path | None, verbose: int = 0, *, tag: str = "run") -> Path | None:
    """Send bids_mdpp's log records to stderr and, if ``log_dir``, to a file there.

    ``verbose`` 0 → INFO on the console, 1+ → DEBUG; the file always gets DEBUG.  Nipype's
    own loggers are quietened unless ``verbose`` ≥ 2.  Returns the log file's path.
    """
    LOGGER.setLevel(logging.DEBUG)
    for handler in list(LOGGER.handlers):
        LOGGER.removeHandler(handler)
        handler.close()
    console = logging.StreamHandler()
    console.setLevel(logging.DEBUG if verbose else logging.INFO)
    console.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s", "%H:%M:%S"))
    LOGGER.addHandler(console)
    LOGGER.propagate = False
    for name in ("nipype.workflow", "nipype.interface", "nipype.utils"):
        logging.getLogger(name).setLevel(logging.INFO if verbose >= 2 else logging.WARNING)
    if log_dir is None:
        return None
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / f"bids_mdpp_{tag}_{timestamp()}_{os.getpid()}.log"
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter(FORMAT))
    LOGGER.addHandler(handler)
    return path


def write_crash_file(log_dir: Path, key: str, exc: BaseException) -> Path:
    """Write the traceback of a failed session to ``logs/crash-<key>-<time>.txt``."""
    text = (
        f"bids_mdpp crash report for {key}\n"
        f"time: {_dt.datetime.now().isoformat(timespec='seconds')}\n"
        f"error: {exc}\n\n" + "".join(traceback.format_exception(exc))
    )
    return write_text(text, log_dir / f"crash-{key}-{timestamp()}-{os.getpid()}.txt")
