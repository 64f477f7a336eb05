"""Errors raised by the Graph API client and its rate-limit governor.

Kept in their own module so the governor and the client can both raise them without importing
each other.
"""

from __future__ import annotations

__all__ = ["GraphApiError", "RateLimitBudgetExceeded"]


class GraphApiError(RuntimeError):
    """A failed Graph API call.

    Attributes mirror Meta's error body: ``code``, ``subcode``, ``error_type``, ``fbtrace_id`` and
    ``is_transient``; ``http_status`` is None when no HTTP response was received (connection
    errors, which are reported as transient). The message never contains the access token or the
    app secret.
    """

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        subcode: int | None = None,
        http_status: int | None = None,
        is_transient: bool = False,
        error_type: str | None = None,
        fbtrace_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.subcode = subcode
        self.http_status = http_status
        self.is_transient = is_transient
        self.error_type = error_type
        self.fbtrace_id = fbtrace_id

    @property
    def retryable(self) -> bool:
        """Worth another try later: Meta says transient, a 5xx, or the generic codes 1 and 2.

        An invalid token (190), a permission error (10, 200-299) or a bad request is not.
        """
        return (
            self.is_transient
            or (self.http_status is not None and self.http_status >= 500)
            or self.code in (1, 2)
        )


class RateLimitBudgetExceeded(GraphApiError):
    """Meta asked us to wait longer than the run's remaining wait budget allows.

    Raised instead of sleeping, so the run ends promptly with a clear message; the next run
    resumes from its checkpoint. ``requested_seconds`` is the wait that did not fit,
    ``waited_seconds`` what the run had already waited and ``max_wait_seconds`` the budget.
    Not :attr:`retryable`: retrying at once would only meet the same throttle.
    """

    def __init__(
        self,
        message: str,
        *,
        requested_seconds: float,
        waited_seconds: float,
        max_wait_seconds: float,
        code: int | None = None,
        subcode: int | None = None,
        http_status: int | None = None,
    ) -> None:
        super().__init__(message, code=code, subcode=subcode, http_status=http_status)
        self.requested_seconds = requested_seconds
        self.waited_seconds = waited_seconds
        self.max_wait_seconds = max_wait_seconds

    @property
    def retryable(self) -> bool:
        return False
