"""Errors in the OpenAI wire shape, and how library errors map onto HTTP statuses.

Every error the server returns has the body
``{"error": {"message": ..., "type": ..., "param": ..., "code": ...}}``, so an
OpenAI SDK raises its usual exception class for the status:

====== ================================ ==========================================
status  type                              when
====== ================================ ==========================================
400     invalid_request_error             the request is malformed or unsupported, or
                                          its ``moa.strategy`` cannot run on the
                                          mixture's providers
401     authentication_error              missing or wrong bearer key
404     invalid_request_error             unknown model (mixture) name
413     invalid_request_error             body larger than the configured limit
429     rate_limit_error                  more requests at once than allowed
500     server_error                      the mixture's configuration cannot run here
                                          (``x-should-retry: false``: it will not
                                          work on a second try either)
502     upstream_error                    upstream calls failed (quorum, aggregator)
504     timeout_error                     the request or mixture ran out of time
====== ================================ ==========================================
"""

from __future__ import annotations

import json
from typing import Any

from moa.errors import (
    AggregationError,
    ConfigError,
    DeadlineExceededError,
    FeatureUnavailableError,
    MoAError,
    ProviderError,
    ProviderTimeoutError,
    QuorumError,
)

__all__ = ["APIError", "from_library_error"]


class APIError(Exception):
    """An error response: HTTP status plus the OpenAI error object."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def json_bytes(self) -> bytes:
        return json.dumps(self.body(), ensure_ascii=False).encode()

    @classmethod
    def invalid(cls, message: str, param: str | None = None, code: str | None = None) -> APIError:
        return cls(400, message, param=param, code=code)

    @classmethod
    def unsupported(cls, message: str, param: str) -> APIError:
        return cls(400, message, param=param, code="unsupported_parameter")


def from_library_error(error: MoAError, *, strategy_param: str | None = None) -> APIError:
    """The HTTP answer to an error raised while running a mixture.

    ``strategy_param`` names the request field that chose the strategy, when the
    request chose it: a strategy the mixture's providers cannot run is then the
    request's mistake (400 naming the field); otherwise it is the mixture's
    configuration, like a provider key that is not set (500).
    """
    message = str(error)
    if isinstance(error, FeatureUnavailableError):
        if strategy_param is not None:
            return APIError(400, message, param=strategy_param, code="unsupported_value")
        return _misconfigured(message)
    if isinstance(error, DeadlineExceededError):
        return APIError(504, message, type="timeout_error", code="deadline_exceeded")
    if isinstance(error, ProviderTimeoutError):
        return APIError(504, message, type="timeout_error", code="upstream_timeout")
    if isinstance(error, QuorumError):
        if all(f.error_type == "ProviderTimeoutError" for f in error.failures):
            return APIError(504, message, type="timeout_error", code="upstream_timeout")
        return APIError(502, message, type="upstream_error", code="quorum_not_met")
    if isinstance(error, AggregationError):
        if "ProviderTimeoutError" in message:
            return APIError(504, message, type="timeout_error", code="upstream_timeout")
        return APIError(502, message, type="upstream_error", code="aggregation_failed")
    if isinstance(error, ProviderError):
        return APIError(502, message, type="upstream_error", code="upstream_error")
    if isinstance(error, ConfigError):
        return _misconfigured(message)
    return APIError(500, message, type="server_error", code="internal_error")


def _misconfigured(message: str) -> APIError:
    # OpenAI SDKs retry a 500 unless told not to; this one fails again until the config changes.
    return APIError(
        500,
        message,
        type="server_error",
        code="mixture_misconfigured",
        headers={"x-should-retry": "false"},
    )
