"""Library-wide settings, read from the environment (prefix ``FUNNELREC_``).

Nested fields use ``__``: ``FUNNELREC_EVENT_WEIGHTS__TRANSACTION=10``. Thread counts:
``FUNNELREC_THREADS`` (see :mod:`funnelrec.threads`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class EventWeights(BaseModel):
    """How much each funnel step counts as implicit feedback."""

    view: float = Field(1.0, ge=0)
    addtocart: float = Field(3.0, ge=0)
    transaction: float = Field(5.0, ge=0)

    def as_dict(self) -> dict[str, float]:
        return {"view": self.view, "addtocart": self.addtocart, "transaction": self.transaction}


class Settings(BaseSettings):
    """Paths, split ratios and defaults shared by every part of funnelrec."""

    model_config = SettingsConfigDict(
        env_prefix="FUNNELREC_", env_nested_delimiter="__", extra="ignore", validate_assignment=True
    )

    data_dir: Path = Path("data")
    artifacts_dir: Path = Path("artifacts")
    reports_dir: Path = Path("reports")
    train_ratio: float = Field(0.8, gt=0, le=1)
    val_ratio: float = Field(0.1, ge=0, lt=1)
    test_ratio: float = Field(0.1, ge=0, lt=1)
    session_timeout_minutes: float = Field(30.0, gt=0)
    random_seed: int = 42
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # CPU threads of torch, BLAS, FAISS and ALS (None: the cores this process may use, see
    # funnelrec.threads); FUNNELREC_THREADS
    threads: int | None = Field(None, ge=1)
    # deprecated alias of `threads` (FUNNELREC_FAISS_THREADS), read when `threads` is unset
    faiss_threads: int | None = Field(None, ge=1)
    event_weights: EventWeights = EventWeights()
    # Scale of the synthetic data `funnelrec demo` generates when data_dir/raw is empty.
    demo_scale: Literal["tiny", "demo", "full"] = "demo"
    api_key: SecretStr | None = None
    # Every tqdm bar funnelrec draws (`funnelrec -q` turns them off); see funnelrec.progress.
    progress_bars: bool = True

    @model_validator(mode="after")
    def _ratios_sum_to_one(self) -> Settings:
        total = self.train_ratio + self.val_ratio + self.test_ratio
        if not math.isclose(total, 1.0, abs_tol=1e-6):
            raise ValueError(
                f"train_ratio + val_ratio + test_ratio must sum to 1, got "
                f"{self.train_ratio} + {self.val_ratio} + {self.test_ratio} = {total:g}"
            )
        return self

    @property
    def raw_dir(self) -> Path:
        """Where raw RetailRocket-format files are read from."""
        return self.data_dir / "raw"

    @property
    def processed_dir(self) -> Path:
        """Where the example notebook writes its tables and pictures (runs keep theirs in reports/<run>/)."""
        return self.data_dir / "processed"

    def resolve_device(self) -> str:
        """``auto`` becomes ``cuda`` when a GPU is visible, else ``cpu``."""
        if self.device != "auto":
            return self.device
        import torch  # lazy: config must not pay torch's import time

        return "cuda" if torch.cuda.is_available() else "cpu"


settings = Settings()
