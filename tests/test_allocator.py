"""The allocator setting: freed large blocks are reused without faulting their pages in again."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from seminar.allocator import OPT_OUT_VARIABLE

# allocate and touch 64 MB twice; print how many page faults the second time cost
_PROBE = """
import resource, numpy as np
from seminar.allocator import retain_freed_memory
told = retain_freed_memory()
def cycle():
    block = np.ones(8_000_000)
    del block
cycle()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
cycle()
print(told, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _second_cycle_faults(opt_out: str) -> tuple[str, int]:
    env = {**os.environ, OPT_OUT_VARIABLE: opt_out}
    out = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, check=True)
    told, faults = out.stdout.split()
    return told, int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only")
def test_retained_block_is_reused_without_page_faults() -> None:
    told, retained = _second_cycle_faults("")
    if told != "True":
        pytest.skip("this C library has no mallopt (not glibc)")
    opted_out, system = _second_cycle_faults("1")
    assert opted_out == "False"
    assert retained * 4 < system  # 64 MB is 16,384 pages of 4 KB (fewer with huge pages)
    assert retained < 1000
