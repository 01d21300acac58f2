"""Models: embeddings, target attention, search units, the PSU and the downstream ranker."""
