"""Metrics and the Evaluator."""

from funnelrec.evaluation.evaluator import EvaluationResult, Evaluator

__all__ = ["EvaluationResult", "Evaluator"]
