"""Approximate top-K retrieval of multi-modal behaviours: multi-modal PQ (SDC/ADC), kernels, baselines."""

from seminar.retrieval.kernels import ADCEngine, PQSearcher, SearchResult, batched_adc_topk, masked_topk
from seminar.retrieval.pq import MultiModalPQ, PQConfig

__all__ = [
    "ADCEngine",
    "MultiModalPQ",
    "PQConfig",
    "PQSearcher",
    "SearchResult",
    "batched_adc_topk",
    "masked_topk",
]
