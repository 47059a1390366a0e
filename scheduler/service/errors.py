"""Errors of the scheduler service: one root; bad input from the network is a ProtocolError."""

from __future__ import annotations


class ServiceError(Exception):
    """Root of every error raised by ``scheduler.service``."""


class ConfigError(ServiceError, ValueError):
    """The configuration file, environment or flags are invalid."""


class ProtocolError(ServiceError):
    """A request the API refuses; carries the HTTP status and, if one is to blame, the field.

    ``field`` is the path of the offending JSON field (``"reports[2].cost_s"``), ``"body"``
    when the body as a whole is unusable, or None when no field is at fault (a bad token).
    """

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


class WriterStoppedError(ServiceError):
    """The state writer is shutting down; the operation was not applied."""
