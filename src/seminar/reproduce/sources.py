"""The dataset sources a reproduce config can name: re-exported from :mod:`seminar.data.sources.options`.

The option dataclasses live with the readers so ``seminar prepare`` does not depend on this
package; this module keeps the old import path working.
"""

from __future__ import annotations

from seminar.data.sources.options import (
    NO_TEXT_ENCODER_SOURCES,
    SOURCE_OPTIONS,
    AmazonOptions,
    KuaisarOptions,
    Ml100kOptions,
    RecboleOptions,
    SequencesOptions,
    SyntheticOptions,
    TablesOptions,
    missing_inputs,
    read_source,
)
from seminar.errors import InvalidValue

__all__ = [
    "NO_TEXT_ENCODER_SOURCES",
    "SOURCE_OPTIONS",
    "AmazonOptions",
    "InvalidValue",
    "KuaisarOptions",
    "Ml100kOptions",
    "RecboleOptions",
    "SequencesOptions",
    "SyntheticOptions",
    "TablesOptions",
    "missing_inputs",
    "read_source",
]
