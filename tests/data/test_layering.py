"""The data layer does not import the experiment grid: `seminar prepare` must not need `seminar.reproduce`.

Checked in a fresh interpreter, since this test session has long imported everything.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

# The whole `seminar` parser registers every command (reproduce and demo import the grid and the
# experiment module while it is built), so only `prepare` is registered here: what is judged is the
# prepare path itself (the CLI module, its wiring, the source options, reading and building).
PREPARE = """
import argparse, sys
from seminar import cli
from seminar.data.tables import DataError
parser = argparse.ArgumentParser()
cli._register_prepare(parser.add_subparsers(dest="command", required=True))
args = parser.parse_args(sys.argv[1:])
try:
    code = args.func(args)
except DataError as exc:
    print("error:", exc, file=sys.stderr)
    code = 2
loaded = sorted(m for m in sys.modules if m.startswith(("seminar.reproduce", "seminar.experiment")))
assert loaded == [], loaded
print("exit", code)
"""


def _fresh(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300, check=False
    )


@pytest.mark.parametrize("module", ["seminar.data.sources.options", "seminar.errors"])
def test_source_options_do_not_import_reproduce(module: str) -> None:
    code = f"import {module}, sys; print(sorted(m for m in sys.modules if m.startswith('seminar.reproduce')))"
    out = _fresh(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_prepare_reads_sources_without_reproduce(tmp_path: Path) -> None:
    sequences = tmp_path / "seq.txt"
    sequences.write_text(
        "".join(f"{u} " + " ".join(str((3 * u + i) % 30) for i in range(6)) + "\n" for u in range(8))
    )
    out = _fresh(
        PREPARE,
        "prepare",
        "sequences",
        str(sequences),
        "--negatives",
        "3",
        "--out",
        str(tmp_path / "d"),
        "--quiet",
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("exit 0")


def test_bad_source_option_is_translated_without_reproduce(tmp_path: Path) -> None:
    """InvalidValue (now in seminar.errors) still becomes a clear usage error."""
    args = ("prepare", "ml-100k", "--query-fraction", "2", "--out", str(tmp_path / "d"), "--quiet")
    out = _fresh(PREPARE, *args)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("exit 2")
    assert "--query-fraction: must lie in [0, 1], got 2.0" in out.stderr


def test_reproduce_keeps_re_exporting_the_moved_names() -> None:
    """Old imports (``seminar.reproduce.sources``, ``.errors``) still get the very same objects."""
    from seminar import errors
    from seminar.data.sources import options
    from seminar.reproduce import errors as reproduce_errors
    from seminar.reproduce import sources

    assert reproduce_errors.InvalidValue is errors.InvalidValue
    for name in sources.__all__:
        home = errors if name == "InvalidValue" else options
        assert getattr(sources, name) is getattr(home, name)
