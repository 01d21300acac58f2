"""Every ranker by name: the two-stage GSU/ESU models and the reference rankers they are measured against.

One map, ``RANKERS`` (name -> how it is built), used by the CLI's ``--model`` choices, the reproduce
grid, training and evaluation. A two-stage model is one entry of
:data:`~seminar.models.ranker.SEARCHES` (its GSU: ``Ranker`` builds that from the config alone, so
saved runs rebuild without this module), a reference ranker one entry of ``REFERENCE_MODELS``; their
names are also listed in :mod:`seminar.models.names`, which the CLI reads without importing torch
(a test holds the two equal).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from torch import nn

from seminar.data.schema import SeminarDataset
from seminar.models.features import FeatureTables
from seminar.models.names import ALL_MODELS as ALL_MODELS
from seminar.models.oracle import OracleRanker
from seminar.models.ranker import MODELS, Ranker, RankerConfig
from seminar.models.reference import ItemKnnRanker, PopularityRanker, SasRec

REFERENCE_MODELS: dict[str, type[nn.Module]] = {
    "popularity": PopularityRanker,
    "itemknn": ItemKnnRanker,
    "sasrec": SasRec,
    "oracle": OracleRanker,  # lifelong data only: the ceiling, from the generator's ground truth
}
RANKERS: dict[str, Callable[[FeatureTables, RankerConfig], nn.Module]] = {
    **REFERENCE_MODELS,
    **dict.fromkeys(MODELS, Ranker),
}

logger = logging.getLogger(__name__)


def build_ranker(tables: FeatureTables, config: RankerConfig, ds: SeminarDataset | None = None) -> nn.Module:
    """The ranker named by ``config.model``; models fitted by counting (popularity, item-kNN) are
    fitted on ``ds``'s training histories when it is given, the oracle on its generator's truth."""
    if config.model not in RANKERS:
        raise ValueError(f"unknown model {config.model!r}; choose one of {ALL_MODELS}")
    if config.item_popularity and config.model in REFERENCE_MODELS:
        logger.warning(
            "%s is a reference ranker without a learned head: item_popularity changes nothing", config.model
        )
    model = RANKERS[config.model](tables, config)
    fit = getattr(model, "fit", None)
    if ds is not None and callable(fit):
        fit(ds)
    return model
