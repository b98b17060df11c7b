"""Shared fixtures: the real data beside the checkout, and tiny BIDS datasets made on the fly."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest
from bids_builders import make_bids

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SAMPLE_DATA = Path(__file__).resolve().parents[1] / "bids_mdpp" / "data" / "sample"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (the real MSLUB scans); tests that need it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is not available")
    return SHARED_DATA


@pytest.fixture
def bids_factory(tmp_path):
    """``bids_factory(files, name=…)`` → path of a new tiny BIDS dataset in tmp."""
    counter = iter(range(1000))

    def factory(files: list[str], **kwargs) -> Path:
        return make_bids(tmp_path / f"bids{next(counter)}", files, **kwargs)

    return factory


@pytest.fixture
def restore_process_state():
    """In-process CLI runs set bids_mdpp's log handlers and torch's threads; restore them after
    (use with ``pytestmark = pytest.mark.usefixtures("restore_process_state")``)."""
    import torch

    logger = logging.getLogger("bids_mdpp")
    handlers, propagate, level = list(logger.handlers), logger.propagate, logger.level
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
    for handler in list(logger.handlers):
        if handler not in handlers:
            logger.removeHandler(handler)
            handler.close()
    logger.propagate, logger.level = propagate, level
