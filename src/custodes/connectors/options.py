"""Options every SaaS connector shares (under `connectors.<name>.options`), validated by each kind's model."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, ConfigDict, Field

from custodes.responder.http import RetryPolicy


class RetryOptions(BaseModel):
    """Retries of one request: attempts, the longest single wait and the first backoff step (seconds)."""

    model_config = ConfigDict(extra="forbid")

    attempts: int = Field(default=6, ge=1, le=20)
    max_wait: float = Field(default=60.0, gt=0)
    backoff: float = Field(default=0.5, gt=0)

    @property
    def policy(self) -> RetryPolicy:
        """The policy `send` takes."""
        return RetryPolicy(self.attempts, self.max_wait, self.backoff)


class PollOptions(BaseModel):
    """Paging, time windows, timeouts and retries."""

    model_config = ConfigDict(extra="forbid")

    page_size: int = Field(default=1000, ge=1, le=1000)
    lookback_seconds: float = Field(default=3600.0, gt=0, description="how far back the first round reads")
    overlap_seconds: float = Field(default=600.0, ge=0, description="re-read this much before the watermark")
    timeout_seconds: float = Field(default=30.0, gt=0, description="per request")
    retry: RetryOptions = Field(default_factory=RetryOptions)

    @property
    def lookback(self) -> timedelta:
        """`lookback_seconds` as a timedelta."""
        return timedelta(seconds=self.lookback_seconds)

    @property
    def overlap(self) -> timedelta:
        """`overlap_seconds` as a timedelta."""
        return timedelta(seconds=self.overlap_seconds)
