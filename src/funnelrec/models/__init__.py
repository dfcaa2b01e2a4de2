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
from funnelrec.models.hybrid.funnel_aware import FunnelAwareHybridRecommender
from funnelrec.models.neighbors.session_knn import SessionKNNRecommender

__all__ = [
    "ALSRecommender",
    "FunnelAwareHybridRecommender",
    "Item2VecRecommender",
    "REGISTRY",
    "ArtifactError",
    "NotFittedError",
    "PopularItemsRecommender",
    "RecommendationList",
    "SessionKNNRecommender",
    "Recommender",
    "get_model_class",
]
