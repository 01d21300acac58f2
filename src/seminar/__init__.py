"""seminar: lifelong multi-modal sequential recommendation and personalised search (SEMINAR)."""

__version__ = "0.1.0"
