"""`seminar reproduce`: run an experiment grid from a YAML config and write a report folder.

    from seminar.reproduce import run_reproduce
    results = run_reproduce("configs/ml100k-quick.yaml", "runs/reproduce/ml100k-quick")

Modules: config (YAML into typed dataclasses), sources (dataset sources), cells (the grid and
its folder layout), grid (the resumable runner), aggregate (mean ± std over seeds), tables and
plots (Markdown and PNG), report (the folder's README.md and results.json), cli (the command).
"""

from seminar.reproduce.config import ConfigError, ReproduceConfig, load_config
from seminar.reproduce.grid import run_reproduce

__all__ = ["ConfigError", "ReproduceConfig", "load_config", "run_reproduce"]
