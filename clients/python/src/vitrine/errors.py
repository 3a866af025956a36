"""Exceptions: one class per error code of the API.

Every non-2xx answer of a Vitrine server is ``{"error": {"code", "message"}}``;
:func:`error_from` turns it into the class registered for its code (or
:class:`VitrineError` for a code this client does not know yet).
"""

from __future__ import annotations

from typing import Optional


class VitrineError(Exception):
    """An error answer from the server (or a client-side check that failed).

    Attributes:
        code: the API's stable error code (``insufficient_balance``, …).
        message: the server's explanation, for a human.
        status: the HTTP status (0 for errors raised by the client itself).
    """

    code = "error"

    def __init__(self, message: str, *, code: Optional[str] = None, status: int = 0):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.status = status

    def __str__(self) -> str:
        return f"{self.code}: {self.message}" if self.status else self.message


class Unauthorized(VitrineError):
    """401: no API key, or one the server does not know."""

    code = "unauthorized"


class Forbidden(VitrineError):
    """403: the key may not do this (another account's model, an operator route)."""

    code = "forbidden"


class NotFound(VitrineError):
    """404: no such account, model, version or log entry."""

    code = "not_found"


class Conflict(VitrineError):
    """409: the name is taken, or a call with this Idempotency-Key is still running."""

    code = "conflict"


class Gone(VitrineError):
    """410: the model was deleted or taken down, or the version is yanked."""

    code = "gone"


class PayloadTooLarge(VitrineError):
    """413: a body or tensor past one of the server's limits."""

    code = "payload_too_large"


class InvalidModel(VitrineError):
    """422: an upload that is not a model the server accepts."""

    code = "invalid_model"


class InvalidInput(VitrineError):
    """422: inputs that do not fit the model's signature."""

    code = "invalid_input"


class InvalidRequest(VitrineError):
    """400/422: a request the server cannot read (a bad field, a reused Idempotency-Key)."""

    code = "invalid_request"


class InsufficientBalance(VitrineError):
    """402: the balance cannot cover the price; nothing ran, nothing was charged."""

    code = "insufficient_balance"


class RateLimited(VitrineError):
    """429: too many calls from this key; retry after :attr:`retry_after` seconds."""

    code = "rate_limited"

    def __init__(self, message: str, *, code: Optional[str] = None, status: int = 0, retry_after: float = 1.0):
        super().__init__(message, code=code, status=status)
        self.retry_after = retry_after


class InferenceTimeout(VitrineError):
    """504: the model ran past the server's ``inference_timeout_ms``; nothing was charged."""

    code = "inference_timeout"


class Unavailable(VitrineError):
    """503: the server cannot serve this now; retry after :attr:`retry_after` seconds."""

    code = "unavailable"

    def __init__(self, message: str, *, code: Optional[str] = None, status: int = 0, retry_after: float = 1.0):
        super().__init__(message, code=code, status=status)
        self.retry_after = retry_after


class ModelQuarantined(VitrineError):
    """503: the version is out of service until the operator lifts its quarantine."""

    code = "model_quarantined"


class ModelOutOfMemory(VitrineError):
    """422: the model needs more memory on these inputs than a worker may use."""

    code = "model_out_of_memory"


class ModelCrashed(VitrineError):
    """502: the worker running the model died; nothing was charged."""

    code = "model_crashed"


class OutputTooLarge(VitrineError):
    """422: the model's outputs are larger than the server gives back."""

    code = "output_too_large"


class AmountTooLarge(VitrineError):
    """422: an amount past what the ledger holds."""

    code = "amount_too_large"


class StorageQuotaExceeded(VitrineError):
    """413: the account's models would take more storage than it may use."""

    code = "storage_quota_exceeded"


class MethodNotAllowed(VitrineError):
    """405: the route does not take that method."""

    code = "method_not_allowed"


class InternalError(VitrineError):
    """500: the server failed; it has logged why."""

    code = "internal"


class ReceiptInvalid(VitrineError):
    """A receipt that does not verify: raised by :meth:`vitrine.Receipt.verify`."""

    code = "receipt_invalid"


#: The exception class of each error code.
ERRORS = {
    cls.code: cls
    for cls in (
        Unauthorized,
        Forbidden,
        NotFound,
        Conflict,
        Gone,
        PayloadTooLarge,
        InvalidModel,
        InvalidInput,
        InvalidRequest,
        InsufficientBalance,
        RateLimited,
        InferenceTimeout,
        Unavailable,
        ModelQuarantined,
        ModelOutOfMemory,
        ModelCrashed,
        OutputTooLarge,
        AmountTooLarge,
        StorageQuotaExceeded,
        MethodNotAllowed,
        InternalError,
    )
}


def error_from(status: int, body: object, retry_after: Optional[str] = None) -> VitrineError:
    """The exception for an error answer: its status, its JSON body and its
    ``Retry-After`` header."""
    code, message = "error", f"HTTP {status}"
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        code = str(body["error"].get("code", code))
        message = str(body["error"].get("message", message))
    try:
        delay = float(retry_after) if retry_after is not None else 1.0
    except ValueError:
        delay = 1.0
    if code == RateLimited.code:
        return RateLimited(message, code=code, status=status, retry_after=delay)
    if code == Unavailable.code:
        return Unavailable(message, code=code, status=status, retry_after=delay)
    return ERRORS.get(code, VitrineError)(message, code=code, status=status)
