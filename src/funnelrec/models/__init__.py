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

__all__ = [
    "REGISTRY",
    "ArtifactError",
    "NotFittedError",
    "PopularItemsRecommender",
    "RecommendationList",
    "Recommender",
    "get_model_class",
]
