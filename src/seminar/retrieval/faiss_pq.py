"""faiss indexes over multi-modal PQ codes, built once per sequence so that a query is one faiss call.

Multi-modal ADC is inner-product PQ over the concatenated channels (S = M·n_sub sub-quantizers with the
per-channel codebooks stacked), so faiss scans the codes directly:

* any bit width: ``IndexPQ``;
* 4-bit codes: ``IndexPQFastScan`` (SIMD, 8-bit quantized look-up tables), optionally wrapped in an
  ``IndexRefine`` that rescores its shortlist with float tables. The refine index is an 8-bit
  ``IndexPQ`` whose sub-quantizer p covers the code pair (2p, 2p+1): its 256 centroids are the
  concatenations of the two 16-centroid codebooks, and its code bytes are exactly the packed 4-bit
  bytes. Its float tables give the same score as the 4-bit tables with half the look-ups, and faiss
  decodes 8-bit codes much faster than 4-bit ones.

An odd S is padded with one all-zero sub-quantizer (code 0, zero query slice) that adds nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # imported where an index is built: the rest of retrieval loads without faiss
    import faiss


def pack_codes(flat_codes: np.ndarray, nbits: int) -> np.ndarray:
    """Pack codes [L, S] into faiss's bit layout (little-endian bit stream), uint8 [L, ceil(S·nbits/8)]."""
    flat = np.asarray(flat_codes)
    if nbits == 8:
        return np.ascontiguousarray(flat, dtype=np.uint8)
    if nbits == 4 and flat.shape[1] % 2 == 0:
        pairs = flat.reshape(flat.shape[0], -1, 2).astype(np.uint8)
        return np.ascontiguousarray(pairs[..., 0] | (pairs[..., 1] << 4))
    flat = flat.astype(np.uint32)
    bits = ((flat[..., None] >> np.arange(nbits, dtype=np.uint32)) & 1).astype(np.uint8)
    return np.packbits(bits.reshape(flat.shape[0], -1), axis=1, bitorder="little")


def padded_subquantizers(n_codes: int, nbits: int) -> int:
    """Number of sub-quantizers the 4-bit indexes use (S rounded up to even); S for other widths."""
    return n_codes + n_codes % 2 if nbits == 4 else n_codes


def _index_pq(centroids: np.ndarray, packed: np.ndarray, nbits: int) -> faiss.IndexPQ:
    """IndexPQ (inner product) with given centroids [S, 2^nbits, dsub] holding already packed codes."""
    n_sub, _, dsub = centroids.shape
    import faiss

    index = faiss.IndexPQ(n_sub * dsub, n_sub, nbits, faiss.METRIC_INNER_PRODUCT)
    faiss.copy_array_to_vector(np.ascontiguousarray(centroids, dtype=np.float32).ravel(), index.pq.centroids)
    index.is_trained = True
    if packed.shape[0]:
        index.add_sa_codes(packed)
    return index


def pair_codebooks(centroids: np.ndarray) -> np.ndarray:
    """Centroids [S, 16, dsub] (S even) -> [S/2, 256, 2·dsub]; entry lo + 16·hi = (e_2p[lo], e_2p+1[hi])."""
    n_sub, ksub, dsub = centroids.shape
    pairs = np.empty((n_sub // 2, ksub, ksub, 2 * dsub), dtype=np.float32)  # [p, hi, lo, :]
    pairs[..., :dsub] = centroids[0::2, None, :, :]
    pairs[..., dsub:] = centroids[1::2, :, None, :]
    return pairs.reshape(n_sub // 2, ksub * ksub, 2 * dsub)


def build_index(
    codebooks: np.ndarray, flat_codes: np.ndarray, nbits: int, fastscan: bool, oversample: float
) -> faiss.Index:
    """faiss index over codes [L, S] with stacked codebooks [S, C, dsub].

    With ``fastscan`` (4-bit codes only) and ``oversample`` > 1 the result is an ``IndexRefine``
    that fetches oversample·k FastScan candidates and rescores them with float tables.
    """
    n_codes, n_centroids, dsub = codebooks.shape
    ksub = 1 << nbits
    padded = padded_subquantizers(n_codes, nbits) if fastscan else n_codes
    centroids = np.zeros((padded, ksub, dsub), dtype=np.float32)  # unused slots stay zero
    centroids[:n_codes, :n_centroids] = codebooks
    codes = flat_codes
    if padded != n_codes:
        codes = np.zeros((flat_codes.shape[0], padded), dtype=flat_codes.dtype)
        codes[:, :n_codes] = flat_codes
    packed = pack_codes(codes, nbits)
    index = _index_pq(centroids, packed, nbits)
    if not fastscan:
        return index
    if nbits != 4:
        raise ValueError(f"FastScan needs 4-bit codes, got {nbits} bits")
    import faiss

    fast = faiss.IndexPQFastScan(index)
    if oversample <= 1:
        return fast
    refine = faiss.IndexRefine(fast, _index_pq(pair_codebooks(centroids), packed, 8))
    refine.k_factor = float(oversample)
    return refine
