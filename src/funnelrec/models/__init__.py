"""Every recommender; importing this package registers the built-in models."""

from funnelrec.models.base import (
    REGISTRY,
    ArtifactError,
    NotFittedError,
    RecommendationList,
    Recommender,
    get_model_class,
)
from funnelrec.models.baselines.popular import PopularItemsRecommender
from funnelrec.models.collaborative.als import ALSRecommender
from funnelrec.models.content.item2vec import Item2VecRecommender

__all__ = [
    "ALSRecommender",
    "Item2VecRecommender",
    "REGISTRY",
    "ArtifactError",
    "NotFittedError",
    "PopularItemsRecommender",
    "RecommendationList",
    "Recommender",
    "get_model_class",
]
