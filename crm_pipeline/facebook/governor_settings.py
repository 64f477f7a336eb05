"""How patient the rate-limit governor is: a plain value, built by its caller.

``crm_pipeline.config`` builds it from the ``CRM_GRAPH_*`` environment variables
(``GraphSettings.governor_settings()``); this package never reads the environment itself.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MAX_WAIT_ENV", "GovernorSettings"]

# Named in the budget error so the reader knows which knob to turn.
MAX_WAIT_ENV = "CRM_GRAPH_MAX_WAIT_SECONDS"


@dataclass(frozen=True)
class GovernorSettings:
    """How patient the governor is.

    ``max_wait_seconds`` is the total a run (one client, or one explicit governor) may spend
    waiting on rate limits, backoffs and slow-downs; a wait that would go past it raises
    :class:`~crm_pipeline.facebook.errors.RateLimitBudgetExceeded` instead. The slow-down pause
    grows linearly from 0 at ``slow_down_at_pct`` to ``slow_down_factor * base_backoff_seconds``
    at 100% usage.

    ``calls_per_account`` is how many requests of one scope (one ad account) may be in flight at
    once, ``max_calls_in_flight`` how many across every governor of a registry (the process):
    Meta limits each account and the app as a whole. Waiting for a free slot is not a rate-limit
    wait and does not count toward ``max_wait_seconds``.
    """

    slow_down_at_pct: float = 75.0
    slow_down_factor: float = 30.0
    base_backoff_seconds: float = 1.0
    max_backoff_seconds: float = 300.0
    max_retries: int = 8
    max_throttle_waits: int = 100
    max_wait_seconds: float = 900.0
    jitter: float = 0.25
    min_page_size: int = 1
    restore_page_size_after: int = 5
    calls_per_account: int = 1
    max_calls_in_flight: int = 8

    def __post_init__(self) -> None:
        if not 0 < self.slow_down_at_pct <= 100:
            raise ValueError(f"slow_down_at_pct must be in (0, 100], got {self.slow_down_at_pct}")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), got {self.jitter}")
        for name in (
            "base_backoff_seconds",
            "max_backoff_seconds",
            "max_wait_seconds",
            "slow_down_factor",
            "max_retries",
            "max_throttle_waits",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")
        if self.min_page_size < 1 or self.restore_page_size_after < 1:
            raise ValueError("min_page_size and restore_page_size_after must be at least 1")
        for name in ("calls_per_account", "max_calls_in_flight"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
