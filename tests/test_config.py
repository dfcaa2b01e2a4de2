"""Settings: defaults, the FUNNELREC_ environment, nested weights and the ratio check."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from funnelrec.config import EventWeights, Settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No FUNNELREC_ variable from the caller's shell leaks into these tests."""
    for name in list(os.environ):
        if name.upper().startswith("FUNNELREC_"):
            monkeypatch.delenv(name, raising=False)


def test_defaults() -> None:
    s = Settings()
    assert (s.train_ratio, s.val_ratio, s.test_ratio) == (0.8, 0.1, 0.1)
    assert s.session_timeout_minutes == 30.0
    assert s.data_dir == Path("data")
    assert s.raw_dir == Path("data") / "raw"
    assert s.processed_dir == Path("data") / "processed"
    assert s.random_seed == 42
    assert s.device == "auto"
    assert s.event_weights.as_dict() == {"view": 1.0, "addtocart": 3.0, "transaction": 5.0}
    assert s.api_key is None


def test_raw_and_processed_dirs_follow_data_dir(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path)
    assert s.raw_dir == tmp_path / "raw"
    assert s.processed_dir == tmp_path / "processed"


def test_env_prefix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FUNNELREC_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("FUNNELREC_SESSION_TIMEOUT_MINUTES", "45")
    monkeypatch.setenv("FUNNELREC_RANDOM_SEED", "7")
    monkeypatch.setenv("FUNNELREC_DEVICE", "cpu")
    s = Settings()
    assert s.data_dir == tmp_path
    assert s.raw_dir == tmp_path / "raw"
    assert s.session_timeout_minutes == 45.0
    assert s.random_seed == 7
    assert s.device == "cpu"
    assert s.resolve_device() == "cpu"


def test_unprefixed_env_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SESSION_TIMEOUT_MINUTES", "99")
    assert Settings().session_timeout_minutes == 30.0


def test_env_ratios(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FUNNELREC_TRAIN_RATIO", "0.7")
    monkeypatch.setenv("FUNNELREC_VAL_RATIO", "0.2")
    s = Settings()
    assert (s.train_ratio, s.val_ratio, s.test_ratio) == (0.7, 0.2, 0.1)


def test_nested_event_weight_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FUNNELREC_EVENT_WEIGHTS__TRANSACTION", "10")
    s = Settings()
    assert s.event_weights.transaction == 10.0
    # the other weights keep their defaults
    assert s.event_weights.view == 1.0
    assert s.event_weights.addtocart == 3.0


def test_secret_is_not_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FUNNELREC_API_KEY", "hunter2")
    s = Settings()
    assert s.api_key is not None
    assert s.api_key.get_secret_value() == "hunter2"
    assert "hunter2" not in repr(s)


@pytest.mark.parametrize(
    ("train", "val", "test"), [(0.7, 0.1, 0.1), (0.8, 0.2, 0.1), (0.5, 0.25, 0.2)]
)
def test_ratios_must_sum_to_one(train: float, val: float, test: float) -> None:
    with pytest.raises(ValidationError) as info:
        Settings(train_ratio=train, val_ratio=val, test_ratio=test)
    message = str(info.value)
    assert "train_ratio + val_ratio + test_ratio must sum to 1" in message
    assert f"{train} + {val} + {test}" in message


def test_ratios_from_env_must_sum_to_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FUNNELREC_TEST_RATIO", "0.3")
    with pytest.raises(ValidationError, match="train_ratio"):
        Settings()


def test_assignment_is_validated() -> None:
    s = Settings()
    with pytest.raises(ValidationError, match="must sum to 1"):
        s.train_ratio = 0.5
    with pytest.raises(ValidationError):
        s.session_timeout_minutes = 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"session_timeout_minutes": 0},
        {"session_timeout_minutes": -1},
        {"device": "tpu"},
        {"train_ratio": 0.0, "val_ratio": 0.5, "test_ratio": 0.5},
    ],
)
def test_invalid_fields(kwargs: dict) -> None:
    with pytest.raises(ValidationError):
        Settings(**kwargs)


def test_negative_event_weight_rejected() -> None:
    with pytest.raises(ValidationError):
        EventWeights(view=-1.0)
