"""Approximate top-K retrieval of multi-modal behaviours: multi-modal PQ (SDC/ADC), kernels, baselines.

The names below are imported on first use: the command line reads the method names
(:mod:`seminar.retrieval.methods`) without loading torch.
"""

from __future__ import annotations

from seminar.lazy import lazy_attributes

_EXPORTS = {
    **dict.fromkeys(
        ("ADCEngine", "PQSearcher", "SearchResult", "batched_adc_topk", "masked_topk"),
        "seminar.retrieval.kernels",
    ),
    **dict.fromkeys(("MultiModalPQ", "PQConfig"), "seminar.retrieval.pq"),
}
__getattr__ = lazy_attributes(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
