"""Paying calls with x402 from a wallet, without an account, through the
official ``x402`` package (``pip install 'vitrine[x402]'``): on a market
with a chain, a priced call without a key answers 402 with its terms; the
wallet signs an EIP-3009 authorization of exactly that, and the call is
sent again with ``PAYMENT-SIGNATURE``.
"""

from __future__ import annotations

from typing import Any


def payment_signature(wallet: Any, payment_required: str, max_amount: int) -> str:
    """The ``PAYMENT-SIGNATURE`` header paying the terms of a 402's
    ``PAYMENT-REQUIRED`` header with ``wallet`` (a private key as hex, or an
    ``eth_account`` account), refusing to pay more than ``max_amount`` token
    units (the smallest units of the token, as the terms count them)."""
    try:
        from eth_account import Account
        from x402 import x402ClientSync
        from x402.http.utils import decode_payment_required_header, encode_payment_signature_header
        from x402.mechanisms.evm.exact import ExactEvmClientScheme
    except ImportError as error:  # pragma: no cover - depends on the extra
        raise ImportError("paying with x402 needs the x402 extra: pip install 'vitrine[x402]'") from error
    required = decode_payment_required_header(payment_required)
    account = wallet if hasattr(wallet, "sign_message") else Account.from_key(wallet)
    client = x402ClientSync()
    client.register("eip155:*", ExactEvmClientScheme(signer=account))
    # The market's token is allowed, up to the caller's cap per call.
    client.set_spend_controls(
        {
            "allowed_assets": [
                {"network": accept.network, "asset": accept.asset, "max_amount_per_payment": str(max_amount)}
                for accept in required.accepts
            ]
        }
    )
    return str(encode_payment_signature_header(client.create_payment_payload(required)))
