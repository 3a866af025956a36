"""Vitrine's Python client: call models with numpy arrays, pay per call,
verify receipts against the public log, read the market's usage.

>>> import vitrine, numpy as np
>>> client = vitrine.Client("http://127.0.0.1:8080", key)      # or the CLI's configuration
>>> result = client.infer("alice/linear", x=np.ones((1, 4), np.float32))
>>> result["y"], result.price
>>> result.receipt.verify()                                     # signature, leaf, inclusion proof
"""

from .client import AsyncClient, Client, InferResult, Receipt, Stats, Tokens, format_tokens, tokens
from .errors import (
    ERRORS,
    AmountTooLarge,
    Conflict,
    Forbidden,
    Gone,
    InferenceTimeout,
    InsufficientBalance,
    InternalError,
    InvalidInput,
    InvalidModel,
    InvalidRequest,
    MethodNotAllowed,
    ModelCrashed,
    ModelOutOfMemory,
    ModelQuarantined,
    NotFound,
    OutputTooLarge,
    PayloadTooLarge,
    RateLimited,
    ReceiptInvalid,
    StorageQuotaExceeded,
    Unauthorized,
    Unavailable,
    VitrineError,
)
from .log import Checkpoint, Leaf, VerifierKey
from .tensors import tensors_sha256

__all__ = [
    "ERRORS",
    "AmountTooLarge",
    "AsyncClient",
    "Checkpoint",
    "Client",
    "Conflict",
    "Forbidden",
    "Gone",
    "InferResult",
    "InferenceTimeout",
    "InsufficientBalance",
    "InternalError",
    "InvalidInput",
    "InvalidModel",
    "InvalidRequest",
    "Leaf",
    "MethodNotAllowed",
    "ModelCrashed",
    "ModelOutOfMemory",
    "ModelQuarantined",
    "NotFound",
    "OutputTooLarge",
    "PayloadTooLarge",
    "RateLimited",
    "Receipt",
    "ReceiptInvalid",
    "Stats",
    "StorageQuotaExceeded",
    "Tokens",
    "Unauthorized",
    "Unavailable",
    "VerifierKey",
    "VitrineError",
    "format_tokens",
    "tensors_sha256",
    "tokens",
]
