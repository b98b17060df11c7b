"""The memory-allocator setting that makes PyTorch on the CPU ~3x faster (see docs/benchmarks.md).

glibc's malloc returns large activation buffers to the kernel after every call (mmap/munmap),
which costs more system time than the convolutions themselves.  jemalloc (when installed, e.g.
Debian's ``libjemalloc2``) or a high glibc ``mmap_threshold`` avoid it.  Both only work when set
before the process starts, so the console script re-executes itself once with the environment
below.  Set ``BIDS_MDPP_ALLOCATOR=system`` to turn this off.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

MARKER = "BIDS_MDPP_ALLOCATOR"
JEMALLOC_PATHS = (
    "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
    "/usr/lib/aarch64-linux-gnu/libjemalloc.so.2",
    "/usr/lib64/libjemalloc.so.2",
    "/usr/lib/libjemalloc.so.2",
)
JEMALLOC_CONF = "oversize_threshold:0,background_thread:true,metadata_thp:auto,dirty_decay_ms:-1,muzzy_decay_ms:-1"
GLIBC_TUNING = "glibc.malloc.mmap_threshold=4294967296"


def tuned_environment(environ: dict[str, str] | None = None) -> dict[str, str] | None:
    """The environment to re-execute with, or None when nothing needs changing.

    Nothing changes off Linux, when the user chose (``BIDS_MDPP_ALLOCATOR`` set, or their own
    ``LD_PRELOAD``/``GLIBC_TUNABLES``), or when the setting is already in place.
    """
    env = dict(os.environ if environ is None else environ)
    if not sys.platform.startswith("linux") or env.get(MARKER):
        return None
    if env.get("LD_PRELOAD") or env.get("GLIBC_TUNABLES"):
        return None
    jemalloc = next((p for p in JEMALLOC_PATHS if Path(p).exists()), None)
    if jemalloc:
        env["LD_PRELOAD"] = jemalloc
        env.setdefault("MALLOC_CONF", JEMALLOC_CONF)
        env[MARKER] = "jemalloc"
    else:
        env["GLIBC_TUNABLES"] = GLIBC_TUNING
        env[MARKER] = "glibc-mmap-threshold"
    return env


def reexec_with_tuned_allocator(argv: list[str], program: list[str] | None = None) -> None:
    """Replace this process by ``python -m bids_mdpp argv…`` with the tuned allocator.

    ``program`` replaces ``-m bids_mdpp`` (e.g. ``[script]`` for a benchmark script).
    Returns only when no re-execution is needed (or possible).
    """
    env = tuned_environment()
    if env is None:
        return
    program = ["-m", "bids_mdpp"] if program is None else program
    try:
        os.execve(sys.executable, [sys.executable, *program, *argv], env)
    except OSError:
        return
