"""`seminar reproduce`: run an experiment grid from a YAML config and write a report folder.

    from seminar.reproduce import run_reproduce
    results = run_reproduce("configs/ml100k-quick.yaml", "runs/reproduce/ml100k-quick")

Modules: config (YAML into typed dataclasses), sources (dataset sources), cells (the grid and
its folder layout), grid (the resumable runner), aggregate (mean ± std over seeds), tables and
plots (Markdown and PNG), report (the folder's README.md and results.json), cli (the command).
The names below are imported on first use (the runner loads torch; the command line does not
until it runs).
"""

from __future__ import annotations

from seminar.lazy import lazy_attributes

_EXPORTS = {
    **dict.fromkeys(("ConfigError", "ReproduceConfig", "load_config"), "seminar.reproduce.config"),
    "run_reproduce": "seminar.reproduce.grid",
}
__getattr__ = lazy_attributes(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
