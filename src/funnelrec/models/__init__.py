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
from funnelrec.models.retrieval.two_tower import TwoTowerRecommender
from funnelrec.models.sequential.gru4rec import GRU4RecRecommender
from funnelrec.models.sequential.sasrec import SASRecRecommender

__all__ = [
    "ALSRecommender",
    "FunnelAwareHybridRecommender",
    "GRU4RecRecommender",
    "Item2VecRecommender",
    "REGISTRY",
    "ArtifactError",
    "NotFittedError",
    "PopularItemsRecommender",
    "RecommendationList",
    "SASRecRecommender",
    "SessionKNNRecommender",
    "Recommender",
    "TwoTowerRecommender",
    "get_model_class",
]
