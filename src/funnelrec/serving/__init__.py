"""HTTP serving: a FastAPI app over saved artifacts (``create_app``), run by ``funnelrec serve``."""

from funnelrec.serving.app import create_app, find_model_dirs, load_artifacts

__all__ = ["create_app", "find_model_dirs", "load_artifacts"]
