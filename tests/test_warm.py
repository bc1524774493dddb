"""A worker readies itself as it starts (Pipeline.warm): every template compiles, every adapter
is built, and what cannot be readied is named in the log without stopping the worker."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from dispatcher.delivery.pipeline import Pipeline
from dispatcher.render.templates import compile_templates
from dispatcher.settings import Settings


def test_every_shipped_template_compiles() -> None:
    assert compile_templates() == {}


def test_warm_builds_every_adapter(settings: Settings) -> None:
    pipeline = Pipeline(settings)
    try:
        pipeline.warm()
        assert all(name in pipeline.registry._built for name in pipeline.registry.names)
    finally:
        pipeline.close()


def test_a_live_channel_without_credentials_is_named_and_the_rest_is_ready(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    for name in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SENDGRID_API_KEY", "SG.not-a-real-key")
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'w.sqlite3'}", providers="live")
    pipeline = Pipeline(settings)
    try:
        with caplog.at_level(logging.WARNING, logger="dispatcher.delivery.pipeline"):
            pipeline.warm()
        assert "channel sms not ready: TWILIO_ACCOUNT_SID is not set" in caplog.text
        assert "email" in pipeline.registry._built
        assert "SG.not-a-real-key" not in caplog.text
    finally:
        pipeline.close()
