"""Giving the allocator's free pages back to the kernel (what keeps long training runs bounded)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bids_mdpp import allocator

REPO = Path(__file__).resolve().parents[1]

# Fill and free 600 MB in 1 MB blocks, then print the resident memory (kB) before and after
# release_free_memory(), and what it returned.
PROBE = """
from bids_mdpp.allocator import release_free_memory

def rss_kb():
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith("VmRSS"))

blocks = [bytearray(b"x" * (1 << 20)) for _ in range(600)]
del blocks
before = rss_kb()
released = release_free_memory()
print(before, rss_kb(), released)
"""


def run_probe(env: dict[str, str]) -> tuple[int, int, str]:
    result = subprocess.run([sys.executable, "-c", PROBE], env=env, cwd=REPO,
                            capture_output=True, text=True, check=True)
    before, after, released = result.stdout.split()
    return int(before), int(after), released


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and LD_PRELOAD are Linux's")
def test_jemalloc_free_pages_are_purged():
    jemalloc = next((p for p in allocator.JEMALLOC_PATHS if Path(p).exists()), None)
    if jemalloc is None:
        pytest.skip("libjemalloc2 is not installed")
    env = {**os.environ, "LD_PRELOAD": jemalloc, "MALLOC_CONF": allocator.JEMALLOC_CONF,
           allocator.MARKER: "jemalloc"}
    before, after, released = run_probe(env)
    assert released == "True"
    assert before > 500_000, "jemalloc without decay keeps the freed blocks resident"
    assert before - after > 400_000, f"resident memory went from {before} kB to {after} kB only"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_glibc_free_heap_is_trimmed():
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    # a trim threshold above the 600 MB, so that glibc keeps the freed blocks until trimmed
    tunables = "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=2147483648"
    env.update({"GLIBC_TUNABLES": tunables, allocator.MARKER: "glibc-mmap-threshold"})
    before, after, released = run_probe(env)
    assert released == "True"
    assert before > 500_000, "above its trim threshold glibc keeps the freed blocks resident"
    assert before - after > 400_000, f"resident memory went from {before} kB to {after} kB only"


def test_without_the_symbol_nothing_is_released(monkeypatch):
    class NoAllocatorSymbols:
        pass

    monkeypatch.setattr(allocator.ctypes, "CDLL", lambda name: NoAllocatorSymbols())
    assert allocator.release_free_memory({allocator.MARKER: "jemalloc"}) is False
    assert allocator.release_free_memory({}) is False
