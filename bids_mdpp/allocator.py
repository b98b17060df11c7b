"""The memory-allocator setting that makes PyTorch on the CPU ~3x faster (see docs/benchmarks.md).

glibc's malloc returns large activation buffers to the kernel after every call (mmap/munmap),
which costs more system time than the convolutions themselves.  jemalloc (when installed, e.g.
Debian's ``libjemalloc2``) or a high glibc ``mmap_threshold`` avoid it.  Both only work when set
before the process starts, so the console script re-executes itself once with the environment
below.  Set ``BIDS_MDPP_ALLOCATOR=system`` to turn this off.

Neither setting gives free pages back to the kernel on its own (that is where the speed comes
from), so a long run calls :func:`release_free_memory` now and then: training on a few dozen
sessions otherwise grows by tens of MB per step, as the allocator keeps every page it ever
used, until the machine's memory is full.
"""
from __future__ import annotations

import ctypes
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
#: jemalloc's ``MALLCTL_ARENAS_ALL``: ``arena.<i>.purge`` with it purges every arena.
JEMALLOC_ALL_ARENAS = 4096


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


def release_free_memory(environ: dict[str, str] | None = None) -> bool:
    """Give the allocator's free pages back to the kernel; True when it could.

    With jemalloc (the re-executed process, ``BIDS_MDPP_ALLOCATOR=jemalloc``) every arena's
    unused dirty pages are purged (``mallctl("arena.4096.purge")``); with glibc, ``malloc_trim``
    returns the free top of every heap.  Live memory is untouched; the pages purged are faulted
    in again on their next use (about a second for a training step's 4 GB working set), so call
    this every few dozen steps, not every step.
    """
    env = os.environ if environ is None else environ
    try:
        process = ctypes.CDLL(None)
    except OSError:
        return False
    if env.get(MARKER) == "jemalloc":
        mallctl = getattr(process, "mallctl", None)
        if mallctl is None:
            return False
        name = f"arena.{JEMALLOC_ALL_ARENAS}.purge".encode()
        return mallctl(name, None, None, None, ctypes.c_size_t(0)) == 0
    malloc_trim = getattr(process, "malloc_trim", None)
    if malloc_trim is None:
        return False
    malloc_trim(ctypes.c_size_t(0))
    return True
