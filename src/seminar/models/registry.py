"""Every ranker by name: the two-stage GSU/ESU models and the reference rankers they are measured against.

One map, used by the CLI's ``--model`` choices, the reproduce grid, training and evaluation, so that
adding a model is one entry here.
"""

from __future__ import annotations

from torch import nn

from seminar.data.schema import SeminarDataset
from seminar.models.features import FeatureTables
from seminar.models.ranker import MODELS, Ranker, RankerConfig
from seminar.models.reference import ItemKnnRanker, PopularityRanker, SasRec

REFERENCE_MODELS: dict[str, type[nn.Module]] = {
    "popularity": PopularityRanker,
    "itemknn": ItemKnnRanker,
    "sasrec": SasRec,
}
ALL_MODELS: tuple[str, ...] = (*REFERENCE_MODELS, *MODELS)


def build_ranker(tables: FeatureTables, config: RankerConfig, ds: SeminarDataset | None = None) -> nn.Module:
    """The ranker named by ``config.model``; models fitted by counting (popularity, item-kNN) are
    fitted on ``ds``'s training histories when it is given."""
    if config.model in MODELS:
        return Ranker(tables, config)
    if config.model not in REFERENCE_MODELS:
        raise ValueError(f"unknown model {config.model!r}; choose one of {ALL_MODELS}")
    model = REFERENCE_MODELS[config.model](tables, config)
    fit = getattr(model, "fit", None)
    if ds is not None and callable(fit):
        fit(ds)
    return model
