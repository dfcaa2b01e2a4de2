"""The exceptions funnelrec raises on purpose, in the bottom layer so every module can use them."""

from __future__ import annotations


class NotFittedError(RuntimeError):
    """A model (or feature extractor) was used before ``fit``."""


class ArtifactError(ValueError):
    """A saved model cannot be read: missing, corrupted or written by a newer funnelrec."""


class DataError(ValueError):
    """Input data cannot be used: a bad file, column, value or frame (the message names it)."""
