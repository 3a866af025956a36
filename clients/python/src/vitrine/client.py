"""``Client`` and ``AsyncClient``: Vitrine's HTTP API from Python.

Each operation is written once, as a generator that yields the requests it
needs and receives their answers (see ``_Operations``); ``Client`` drives
them with ``httpx.Client`` and ``AsyncClient`` with ``httpx.AsyncClient``,
so the two always behave alike.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Callable, Dict, Generator, Iterable, List, Mapping, Optional, Tuple, Union

import httpx
import numpy as np

from . import config, tensors, x402
from .errors import Conflict, RateLimited, ReceiptInvalid, Unavailable, VitrineError, error_from
from .log import Checkpoint, Leaf, VerifierKey, leaf_hash, verify_inclusion, verify_signature

#: Inputs larger than this (bytes of array data) travel as a safetensors body.
BINARY_THRESHOLD_BYTES = 64 * 1024
_OCTETS = "application/octet-stream"
#: Transport failures after which a call with an Idempotency-Key is sent again.
_RETRIED = (httpx.TransportError,)
#: Files from this size are pushed in pieces through a resumable upload.
PIECES_FROM = 64 << 20
#: The size of a piece, unless ``push(piece_bytes=...)`` says.
PIECE_BYTES = 16 << 20


@dataclass
class _Request:
    """What an operation asks the driver to send."""

    method: str
    path: str
    params: Optional[Dict[str, Any]] = None
    json: Any = None
    content: Optional[Union[bytes, Iterable[bytes]]] = None
    headers: Dict[str, str] = field(default_factory=dict)
    #: Send again, with the same Idempotency-Key, after a dropped connection
    #: or a 409 "still running" / 429 / 503, at most this many times.
    retries: int = 0
    #: Any key: the request needs no key (public reads) when False.
    auth: bool = True


@dataclass
class _Answer:
    status: int
    headers: httpx.Headers
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


Operation = Generator[_Request, _Answer, Any]


@dataclass
class Receipt:
    """A paid call's signed receipt: the leaf the log holds, as the API shows it."""

    log_index: int
    leaf: bytes
    signature: bytes
    fields: Dict[str, Any]
    #: The arrays the call sent and got back, to check the leaf's digests.
    inputs: Optional[Dict[str, np.ndarray]] = None
    outputs: Optional[Dict[str, np.ndarray]] = None
    _client: Optional["_Base"] = None

    @staticmethod
    def from_json(value: Mapping[str, Any], client: Optional["_Base"] = None) -> "Receipt":
        """A receipt from the API's JSON (an answer's ``receipt``, or ``GET /v1/receipts/{i}``)."""
        return Receipt(
            log_index=int(value["log_index"]),
            leaf=base64.b64decode(value["leaf"]),
            signature=base64.b64decode(value["signature"]),
            fields=dict(value),
            _client=client,
        )

    @property
    def decoded(self) -> Leaf:
        """The leaf, decoded."""
        return Leaf.decode(self.leaf)

    def __getattr__(self, name: str) -> Any:
        fields = self.__dict__.get("fields", {})
        if name in fields:
            return fields[name]
        raise AttributeError(name)

    def check_offline(self) -> Leaf:
        """What can be checked without the server: the leaf decodes, its hash
        is ``leaf_hash``, every field shown is the leaf's, and the input and
        output digests are those of the arrays this call sent and got (format
        2 leaves). Returns the leaf; raises ``ReceiptInvalid``."""
        leaf = Leaf.decode(self.leaf)
        if leaf_hash(self.leaf).hex() != self.fields.get("leaf_hash"):
            raise ReceiptInvalid("the receipt's leaf_hash is not the hash of its leaf")
        shown = {
            # A call paid on the chain shows its payer as its caller.
            "model": leaf.model, "version": leaf.version, "blob_sha256": leaf.blob_sha256,
            "caller": leaf.payer or leaf.caller,
            "app": leaf.app, "node": leaf.node, "price": str(leaf.price), "creator_share": str(leaf.creator_share),
            "node_share": str(leaf.node_share), "treasury_share": str(leaf.treasury_share),
            "input_sha256": leaf.input_sha256, "output_sha256": leaf.output_sha256,
        }
        for name, value in shown.items():
            if self.fields.get(name) != value:
                raise ReceiptInvalid(f"the receipt's {name} is not its leaf's")
        if self.fields.get("settlement") != (leaf.settlement or None):
            raise ReceiptInvalid("the receipt's settlement is not its leaf's")
        if leaf.format >= 2:
            if self.inputs is not None and tensors.tensors_sha256(self.inputs) != leaf.input_sha256:
                raise ReceiptInvalid("the leaf's input_sha256 is not the digest of the inputs sent")
            if self.outputs is not None and tensors.tensors_sha256(self.outputs) != leaf.output_sha256:
                raise ReceiptInvalid("the leaf's output_sha256 is not the digest of the outputs received")
        return leaf

    def verify(self, client: Optional["Client"] = None) -> Checkpoint:
        """Checks the receipt completely: :meth:`check_offline`, the serving
        node's signature (its key from ``/v1/log/key``), and the leaf's
        inclusion in a checkpoint signed by the log's pinned key. Returns
        that checkpoint; raises ``ReceiptInvalid``. With an ``AsyncClient``,
        await :meth:`AsyncClient.verify_receipt` instead."""
        owner = client or self._client
        if not isinstance(owner, Client):
            raise TypeError("verify() needs a Client; with an AsyncClient, await client.verify_receipt(receipt)")
        return owner.verify_receipt(self)


@dataclass
class InferResult:
    """A call's answer: the outputs as numpy arrays of their exact dtype and
    shape, and what the answer says beside them."""

    outputs: Dict[str, np.ndarray]
    model: str
    version: int
    #: Minor units charged.
    price: int
    latency_ms: float
    #: None for a free model (the API gives free calls no receipt).
    receipt: Optional[Receipt]
    #: Where the call's leaf is in the log (free calls included).
    log_index: Optional[int]
    #: "json" or "binary": how the inputs travelled.
    sent_as: str
    #: The market's token (symbol, decimals), to read ``price`` as people do.
    token: Optional[Tuple[str, int]] = None

    def __getitem__(self, name: str) -> np.ndarray:
        return self.outputs[name]

    @property
    def price_tokens(self) -> str:
        """The price as people read it: ``"0.002 OPG"`` (``"free"`` at 0)."""
        if self.price == 0:
            return "free"
        if self.token is None:
            return f"{self.price} minor units"
        return format_tokens(self.price, *self.token)

    def __repr__(self) -> str:
        shapes = ", ".join(f"{name!r}: {array.dtype}{list(array.shape)}" for name, array in self.outputs.items())
        return (
            f"InferResult(model={self.model!r}, version={self.version}, price={self.price_tokens!r}, "
            f"latency_ms={self.latency_ms:.2f}, outputs={{{shapes}}}, log_index={self.log_index})"
        )


def _model_path(model: str) -> str:
    owner, sep, name = model.partition("/")
    if not sep or not owner or not name:
        raise ValueError(f"a model is 'owner/name', not '{model}'")
    return f"/v1/models/{owner}/{name}"


class Tokens:
    """An amount in the market's token, as people write it: ``tokens("0.002")``
    is 0.002 OPG on a market of OPG. The client turns it into the API's
    minor units with the market's decimals (from ``/v1/health``), exactly."""

    __slots__ = ("value",)

    def __init__(self, value: Union[str, int, Decimal]):
        try:
            amount = Decimal(str(value).strip())
        except InvalidOperation:
            raise ValueError(f"{value!r} is not an amount of tokens (write it like '0.002')") from None
        if not amount.is_finite() or amount < 0:
            raise ValueError(f"{value!r} is not an amount of tokens (write it like '0.002')")
        self.value = amount

    def minor_units(self, decimals: int) -> int:
        """The amount in minor units of a token of ``decimals`` decimals;
        ``ValueError`` for more digits than the token has."""
        scaled = self.value.scaleb(decimals)
        if scaled != scaled.to_integral_value():
            raise ValueError(f"{self.value} has more than the token's {decimals} decimals")
        return int(scaled)

    def __repr__(self) -> str:
        return f"tokens({str(self.value)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tokens) and other.value == self.value

    def __hash__(self) -> int:
        return hash(self.value)


def tokens(value: Union[str, int, Decimal]) -> Tokens:
    """An amount in tokens (``tokens("0.002")``), for ``price=``, deposits and
    payouts, where an int is minor units."""
    return Tokens(value)


def _as_tokens(value: Union[int, str, Tokens]) -> Optional[Tokens]:
    """``value`` as tokens when it is written as tokens: a :class:`Tokens`, or
    a string with a decimal point (``"0.002"``); ``None`` for minor units."""
    if isinstance(value, Tokens):
        return value
    if isinstance(value, str) and "." in value:
        return Tokens(value)
    return None


def _amount(value: Union[int, str], decimals: Optional[int] = None) -> str:
    """The API's amount string: minor units (an int, or a string of digits),
    or tokens (:func:`tokens`, or ``"0.002"``) given the token's decimals."""
    as_tokens = _as_tokens(value)  # type: ignore[arg-type]
    if as_tokens is not None:
        if decimals is None:
            raise ValueError(f"{value!r} is in tokens, and the market's decimals are not known here")
        return str(as_tokens.minor_units(decimals))
    if isinstance(value, bool):
        raise ValueError(f"an amount is minor units (an int) or tokens (vitrine.tokens('0.002')), not {value!r}")
    text = str(value)
    if not text.isdigit():
        raise ValueError(
            f"an amount is minor units (an int, or a string of digits) or tokens (vitrine.tokens('0.002') or "
            f"'0.002'), not {value!r}"
        )
    return text


def format_tokens(minor: int, symbol: str, decimals: int) -> str:
    """``minor`` minor units as people read them: ``0.002 OPG``, exactly."""
    whole, fraction = divmod(int(minor), 10**decimals)
    text = f"{whole:,}"
    if fraction:
        text += "." + f"{fraction:0{decimals}d}".rstrip("0")
    return f"{text} {symbol}"


def _frame(rows: List[Dict[str, Any]], amounts: Iterable[str] = (), token: Optional[Tuple[str, int]] = None) -> Any:
    """Rows as a pandas DataFrame when pandas is installed, else as they are.
    Each amount column stays exact minor units (int); with the market's
    ``token`` a ``<column>_tokens`` column beside it reads as people do."""
    try:
        import pandas  # noqa: PLC0415
    except ImportError:
        return rows
    frame = pandas.DataFrame(rows)
    for column in amounts:
        if column in frame:
            # Amounts are exact integers; a missing one stays missing.
            frame[column] = frame[column].map(lambda v: int(v) if isinstance(v, str) else v)
            if token is not None:
                scale = 10 ** token[1]
                at = frame.columns.get_loc(column) + 1
                frame.insert(at, f"{column}_tokens", frame[column].map(lambda v: None if v is None else v / scale))
    if "t" in frame:
        frame["t"] = pandas.to_datetime(frame["t"], utc=True)
    return frame


class _Operations:
    """The operations, written once (see the module's documentation)."""

    _pinned_log_key: Optional[str]
    _witnesses: List[str]
    _retries: int
    key: Optional[str]
    #: Pays calls with x402 when there is no key (``x402.py``).
    _wallet: Any
    _max_payment: int

    def _log_key(self) -> Operation:
        answer = yield _Request("GET", "/v1/log/key", auth=False)
        view = _ok(answer)
        pinned = self._pinned_log_key or config.pinned_log_key(view["name"])
        served = view["vkey"]
        if pinned is None:
            # First use: this client trusts the served key from now on.
            self._pinned_log_key = pinned = served
        if pinned != served:
            raise ReceiptInvalid(f"the log key changed: pinned {pinned}, the server serves {served}")
        return VerifierKey.parse(pinned), view

    def _verify_receipt(self, receipt: Receipt) -> Operation:
        leaf = receipt.check_offline()
        key, view = yield from self._log_key()
        node_key = view.get("node_keys", {}).get(leaf.node)
        if node_key is None:
            raise ReceiptInvalid(f"the server does not know node {leaf.node}")
        if not verify_signature(base64.b64decode(node_key), receipt.leaf, receipt.signature):
            raise ReceiptInvalid(f"the signature of node {leaf.node} does not verify")
        # Asking for the receipt makes the server sign a checkpoint covering it.
        answer = yield _Request("GET", f"/v1/receipts/{receipt.log_index}", auth=False)
        fetched = _ok(answer)
        if base64.b64decode(fetched["leaf"]) != receipt.leaf:
            raise ReceiptInvalid(f"the log holds another leaf at {receipt.log_index}")
        answer = yield _Request("GET", "/v1/log/checkpoint", auth=False)
        if answer.status != 200:
            raise error_from(answer.status, _body(answer))
        checkpoint = Checkpoint.verified(answer.body.decode(), key)
        if checkpoint.size <= receipt.log_index:
            raise ReceiptInvalid(f"the checkpoint of {checkpoint.size} leaves does not cover leaf {receipt.log_index}")
        answer = yield _Request(
            "GET", "/v1/log/proof/inclusion", params={"index": receipt.log_index, "size": checkpoint.size}, auth=False
        )
        proof = [bytes.fromhex(h) for h in _ok(answer)["hashes"]]
        if not verify_inclusion(leaf_hash(receipt.leaf), receipt.log_index, checkpoint.size, proof, checkpoint.root):
            raise ReceiptInvalid(f"leaf {receipt.log_index} is not included in the checkpoint of {checkpoint.size}")
        for vkey in self._witnesses:
            VerifierKey.parse(vkey).verify_cosignature(checkpoint.note)
        return checkpoint

    def _token(self) -> Operation:
        """The market's token as (symbol, decimals), asked once."""
        cached = getattr(self, "_token_info", None)
        if cached is None:
            view = _ok((yield _Request("GET", "/v1/health", auth=False)))
            cached = self._token_info = (str(view["token"]["symbol"]), int(view["token"]["decimals"]))
        return cached

    def _minor(self, value: Union[int, str, Tokens]) -> Operation:
        """An amount as the API's minor units; tokens need the market's decimals."""
        if _as_tokens(value) is None:
            return _amount(value)  # type: ignore[arg-type]
        _, decimals = yield from self._token()
        return _amount(value, decimals)  # type: ignore[arg-type]

    def _set_price(self, model: str, price: Union[int, str, Tokens]) -> Operation:
        minor = yield from self._minor(price)
        return (yield from self._update_model(model, {"price_per_inference": minor}))

    def _account(self) -> Operation:
        answer = yield _Request("GET", "/v1/account")
        account = _ok(answer)
        for name in ("balance", "held", "earned_total"):
            if name in account:
                account[name] = int(account[name])
        return account

    def _transfers(self, limit: Optional[int]) -> Operation:
        items: List[Dict[str, Any]] = []
        token = None
        while limit is None or len(items) < limit:
            params = {"limit": 100, **({"page_token": token} if token else {})}
            page = _ok((yield _Request("GET", "/v1/account/transfers", params=params)))
            for item in page["items"]:
                item["amount"] = int(item["amount"])
            items.extend(page["items"])
            token = page.get("next_page_token")
            if not token:
                break
        return items if limit is None else items[:limit]

    def _create_account(self, name: str) -> Operation:
        answer = yield _Request("POST", "/v1/accounts", json={"name": name}, auth=False)
        created = _ok(answer)
        return created["account"], created["api_key"]

    def _deposit(self, account: str, amount: Union[int, str], reference: str) -> Operation:
        body = {"account": account, "amount": (yield from self._minor(amount)), "reference": reference}
        return _ok((yield _Request("POST", "/v1/admin/deposits", json=body)))

    def _create_model(self, name: str, task: str, **fields: Any) -> Operation:
        body: Dict[str, Any] = {"name": name, "task": task}
        for key, value in fields.items():
            if value is not None:
                body[key] = (yield from self._minor(value)) if key == "price_per_inference" else value
        return _ok((yield _Request("POST", "/v1/models", json=body)))

    def _push(self, model: str, source: "_Source", progress: Optional[Callable[[int, int], None]]) -> Operation:
        total = source.size

        def chunks() -> Iterable[bytes]:
            sent = 0
            step = 256 * 1024
            while sent < total or total == 0:
                chunk = source.read(sent, step)
                sent += len(chunk)
                if progress is not None:
                    progress(sent, total)
                yield chunk
                if total == 0 or not chunk:
                    break

        request = _Request(
            "POST",
            f"{_model_path(model)}/versions",
            content=source.data if source.data is not None and progress is None else chunks(),
            headers={"content-type": _OCTETS, "content-length": str(total)},
        )
        return _ok((yield request))

    def _push_in_pieces(
        self,
        model: str,
        source: "_Source",
        piece_bytes: int,
        progress: Optional[Callable[[int, int], None]],
        upload: "_Upload",
    ) -> Operation:
        """A resumable upload: started (or, with ``upload.id`` set, resumed
        from the offset the server has), sent piece by piece, committed with
        the file's SHA-256."""
        uploads = f"{_model_path(model)}/uploads"
        if upload.id is None:
            started = _ok((yield _Request("POST", uploads, json={"size_bytes": source.size})))
            upload.id, offset = started["id"], started["offset"]
        else:
            offset = _ok((yield _Request("GET", f"{uploads}/{upload.id}")))["offset"]
        while offset < source.size:
            piece = source.read(offset, min(piece_bytes, source.size - offset))
            headers = {"upload-offset": str(offset), "content-type": "application/offset+octet-stream"}
            offset = _ok((yield _Request("PATCH", f"{uploads}/{upload.id}", content=piece, headers=headers)))["offset"]
            if progress is not None:
                progress(offset, source.size)
        return _ok((yield _Request("POST", f"{uploads}/{upload.id}/commit", json={"sha256": source.sha256()})))

    def _update_model(self, model: str, fields: Dict[str, Any]) -> Operation:
        return _ok((yield _Request("PATCH", _model_path(model), json=fields)))

    def _delete(self, path: str) -> Operation:
        answer = yield _Request("DELETE", path)
        if not 200 <= answer.status < 300:
            raise error_from(answer.status, _body(answer), answer.headers.get("retry-after"))

    def _models(self, params: Dict[str, Any], limit: Optional[int]) -> Operation:
        items: List[Dict[str, Any]] = []
        token = None
        while limit is None or len(items) < limit:
            query = {k: v for k, v in params.items() if v is not None}
            query["limit"] = 100 if limit is None else min(100, limit - len(items))
            if token:
                query["page_token"] = token
            page = _ok((yield _Request("GET", "/v1/models", params=query)))
            items.extend(page["items"])
            token = page.get("next_page_token")
            if not token:
                break
        return items

    def _get(self, path: str, params: Optional[Dict[str, Any]] = None) -> Operation:
        query = {k: v for k, v in (params or {}).items() if v is not None}
        return _ok((yield _Request("GET", path, params=query or None)))

    def _infer(
        self,
        model: str,
        arrays: Dict[str, np.ndarray],
        version: Optional[int],
        app: Optional[str],
        idempotency_key: Optional[str],
        binary: Optional[bool],
    ) -> Operation:
        arrays = {name: tensors.as_array(value) for name, value in arrays.items()}
        path = _model_path(model) + (f"/versions/{version}" if version is not None else "") + "/infer"
        # The price reads in tokens (the market's token is asked once per client).
        yield from self._token()
        size = sum(a.nbytes for a in arrays.values())
        as_binary = binary if binary is not None else size > BINARY_THRESHOLD_BYTES
        headers = {"idempotency-key": idempotency_key or str(uuid.uuid4()), "accept": _OCTETS}
        if app:
            headers["x-app"] = app
        if as_binary:
            request = _Request("POST", path, content=tensors.encode_safetensors(arrays), retries=self._retries)
            request.headers = {**headers, "content-type": _OCTETS}
        else:
            body = {"inputs": {name: tensors.to_json(a) for name, a in arrays.items()}}
            request = _Request("POST", path, json=body, headers=headers, retries=self._retries)
        answer = yield request
        required = answer.headers.get("payment-required")
        if answer.status == 402 and required and self.key is None and self._wallet is not None:
            # No account: the wallet pays this call with x402. The payment's
            # nonce is its idempotency, so the key goes.
            request.headers.pop("idempotency-key", None)
            request.headers["payment-signature"] = x402.payment_signature(
                self._wallet, required, self._max_payment
            )
            answer = yield request
        if answer.status != 200:
            raise error_from(answer.status, _body(answer), answer.headers.get("retry-after"))
        if answer.headers.get("content-type", "").startswith(_OCTETS):
            outputs, metadata = tensors.decode_safetensors(answer.body)
            receipt_json = json.loads(metadata["receipt"]) if metadata.get("receipt") else None
            view: Dict[str, Any] = dict(metadata)
        else:
            view = answer.json()
            outputs = {name: tensors.from_json(t) for name, t in view["outputs"].items()}
            receipt_json = view.get("receipt")
        receipt = None
        if receipt_json:
            receipt = Receipt.from_json(receipt_json, self)  # type: ignore[arg-type]
            receipt.inputs, receipt.outputs = arrays, outputs
        index = answer.headers.get("x-vitrine-log-index")
        return InferResult(
            outputs=outputs,
            model=str(view.get("model", model)),
            version=int(view["version"]),
            price=int(view["price"]),
            latency_ms=float(view["latency_ms"]),
            receipt=receipt,
            log_index=int(index) if index is not None else (receipt.log_index if receipt else None),
            sent_as="binary" if as_binary else "json",
            token=getattr(self, "_token_info", None),
        )


class _Source:
    """A model to push: bytes in memory, or a file read piece by piece."""

    def __init__(self, file: Union[str, bytes, "os.PathLike[str]"]):
        self.data: Optional[bytes] = file if isinstance(file, bytes) else None
        self.path: str = "" if isinstance(file, bytes) else os.fspath(file)
        self.size = len(file) if isinstance(file, bytes) else os.path.getsize(self.path)

    def read(self, offset: int, length: int) -> bytes:
        if self.data is not None:
            return self.data[offset : offset + length]
        with open(self.path, "rb") as file:
            file.seek(offset)
            return file.read(length)

    def sha256(self) -> str:
        digest = hashlib.sha256()
        for offset in range(0, self.size, 1 << 20):
            digest.update(self.read(offset, 1 << 20))
        return digest.hexdigest()

    def pieces(self, piece_bytes: Optional[int]) -> int:
        """The piece size to push it in; 0: one request."""
        if piece_bytes is not None:
            return piece_bytes
        return PIECE_BYTES if self.size >= PIECES_FROM else 0


@dataclass
class _Upload:
    """A resumable upload's id, once the server gave one."""

    id: Optional[str] = None


def _resumable(error: Exception) -> bool:
    """A piece that failed in a way sending it again from the server's
    offset may mend: a broken connection, a body cut short, a wrong offset."""
    if isinstance(error, httpx.TransportError):
        return True
    return isinstance(error, VitrineError) and error.code in ("upload_interrupted", "conflict", "unavailable")


def _body(answer: _Answer) -> Any:
    try:
        return answer.json()
    except ValueError:
        return None


def _ok(answer: _Answer) -> Any:
    if not 200 <= answer.status < 300:
        raise error_from(answer.status, _body(answer), answer.headers.get("retry-after"))
    return answer.json()


def _retry_delay(answer: _Answer) -> Optional[float]:
    """How long to wait before sending an idempotent call again, or None
    when its answer is final."""
    if answer.status not in (409, 429, 503):
        return None
    error = error_from(answer.status, _body(answer), answer.headers.get("retry-after"))
    if isinstance(error, (RateLimited, Unavailable)):
        return min(error.retry_after, 30.0)
    if isinstance(error, Conflict) and "still running" in error.message:
        return 0.2
    return None


class _Base(_Operations):
    def __init__(
        self,
        url: Optional[str],
        key: Optional[str],
        *,
        log_key: Optional[str],
        witnesses: Iterable[str],
        retries: int,
        timeout: float,
        wallet: Any = None,
        max_payment: Optional[int] = None,
    ):
        if wallet is not None and max_payment is None:
            raise TypeError("a wallet pays up to max_payment token units per call: give max_payment")
        self.url, self.key = config.load(url, key)
        self._wallet = wallet
        self._max_payment = max_payment or 0
        self._pinned_log_key = log_key
        self._witnesses = list(witnesses)
        self._retries = retries
        self._timeout = timeout

    def _headers(self, request: _Request) -> Dict[str, str]:
        headers = dict(request.headers)
        if request.auth and self.key:
            headers["authorization"] = f"Bearer {self.key}"
        return headers


class Client(_Base):
    """A synchronous client.

    Args:
        url: the server; default ``VITRINE_URL``, else the CLI's client
            configuration, else ``http://127.0.0.1:8080``.
        key: the API key; default ``VITRINE_KEY``, else the configuration.
        log_key: the log's verifier key to pin for receipts; default the one
            ``vitrine audit`` pinned, else the server's at first use.
        witnesses: witnesses' verifier keys whose cosignatures a receipt's
            checkpoint must carry.
        retries: how often a call is sent again (same Idempotency-Key, so it
            is charged once) after a dropped connection, a 429 or a 503.
        http: an ``httpx.Client`` to use instead of the client's own.
        wallet: without a key, on a market with a chain, pay each call with
            x402 from this wallet (a private key as hex, or an ``eth_account``
            account); needs ``pip install 'vitrine[x402]'``.
        max_payment: with ``wallet``, the most one call may cost, in the
            token's smallest units (as x402's terms count them).
    """

    def __init__(
        self,
        url: Optional[str] = None,
        key: Optional[str] = None,
        *,
        log_key: Optional[str] = None,
        witnesses: Iterable[str] = (),
        retries: int = 3,
        timeout: float = 60.0,
        http: Optional[httpx.Client] = None,
        wallet: Any = None,
        max_payment: Optional[int] = None,
    ):
        super().__init__(
            url,
            key,
            log_key=log_key,
            witnesses=witnesses,
            retries=retries,
            timeout=timeout,
            wallet=wallet,
            max_payment=max_payment,
        )
        self._http = http or httpx.Client(timeout=timeout)
        self.stats = Stats(self)

    def close(self) -> None:
        """Closes the client's connections."""
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _send(self, request: _Request) -> _Answer:
        attempt = 0
        while True:
            try:
                response = self._http.request(
                    request.method,
                    self.url + request.path,
                    params=request.params,
                    json=request.json,
                    content=request.content,
                    headers=self._headers(request),
                )
                answer = _Answer(response.status_code, response.headers, response.read())
            except _RETRIED:
                if attempt >= request.retries:
                    raise
                attempt += 1
                time.sleep(0.1 * attempt)
                continue
            delay = _retry_delay(answer) if attempt < request.retries else None
            if delay is None:
                return answer
            attempt += 1
            time.sleep(delay)

    def _run(self, operation: Operation) -> Any:
        try:
            request = next(operation)
            while True:
                request = operation.send(self._send(request))
        except StopIteration as done:
            return done.value

    # Accounts and money.

    @classmethod
    def signup(cls, name: str, url: Optional[str] = None, **options: Any) -> "Client":
        """Creates account ``name`` and returns a client holding its new key
        (shown only once: keep ``client.key``)."""
        client = cls(url, None, **options)
        _, key = client._run(client._create_account(name))
        client.key = key
        return client

    def account(self) -> Dict[str, Any]:
        """The key's account: ``id``, ``name``, ``balance``, ``held``,
        ``earned_total`` (amounts as int minor units)."""
        return self._run(self._account())

    def balance(self) -> int:
        """What the account holds, in minor units (holds included)."""
        return self.account()["balance"]

    def transfers(self, limit: Optional[int] = None) -> List[Dict[str, Any]]:
        """The account's transfers, newest first (amounts as int)."""
        return self._run(self._transfers(limit))

    def deposit(self, account: str, amount: Union[int, str], reference: str) -> Dict[str, Any]:
        """Credits ``account`` (operator key) with ``amount`` in minor units
        or tokens (``vitrine.tokens("5")``): the transfer."""
        return self._run(self._deposit(account, amount, reference))

    # Models.

    def create_model(
        self,
        name: str,
        task: str,
        *,
        price: Union[int, str, None] = None,
        description: Optional[str] = None,
        license: Optional[str] = None,
        tags: Optional[List[str]] = None,
        visibility: Optional[str] = None,
    ) -> Dict[str, Any]:
        """Creates model ``name`` of the key's account; ``price`` per call in
        minor units (an int) or in tokens (``vitrine.tokens("0.002")`` or
        ``"0.002"``)."""
        fields = dict(price_per_inference=price, description=description, license=license, tags=tags,
                      visibility=visibility)
        return self._run(self._create_model(name, task, **fields))

    def push(
        self,
        model: str,
        file: Union[str, bytes, "os.PathLike[str]"],
        progress: Optional[Callable[[int, int], None]] = None,
        piece_bytes: Optional[int] = None,
    ) -> Dict[str, Any]:
        """Uploads a new version of ``owner/name`` (an ``.onnx`` file or its
        bytes); ``progress(sent, total)`` is called as bytes go out. A file
        of 64 MiB or more (or any, with ``piece_bytes``) goes in pieces
        through a resumable upload: a piece that fails is sent again from
        where the server stands, up to ``retries`` times. ``piece_bytes=0``
        sends one request."""
        source = _Source(file)
        piece_bytes = source.pieces(piece_bytes)
        if not piece_bytes:
            return self._run(self._push(model, source, progress))
        upload = _Upload()
        for attempt in range(self._retries + 1):
            try:
                return self._run(self._push_in_pieces(model, source, piece_bytes, progress, upload))
            except Exception as error:  # noqa: BLE001 - resumed or raised below
                if attempt == self._retries or not _resumable(error):
                    raise
                time.sleep(0.25 * 2**attempt)
        raise AssertionError("unreachable")

    def set_price(self, model: str, price: Union[int, str]) -> Dict[str, Any]:
        """Sets the price per inference, in minor units (an int) or tokens
        (``vitrine.tokens("0.002")`` or ``"0.002"``); later calls pay it."""
        return self._run(self._set_price(model, price))

    def update_model(self, model: str, **fields: Any) -> Dict[str, Any]:
        """Changes any of the create fields (``description``, ``tags``, …)."""
        return self._run(self._update_model(model, fields))

    def delete_model(self, model: str) -> None:
        """Deletes a model of the key's account: later calls get ``Gone``."""
        self._run(self._delete(_model_path(model)))

    def model(self, model: str) -> Dict[str, Any]:
        """One model."""
        return self._run(self._get(_model_path(model)))

    def versions(self, model: str) -> List[Dict[str, Any]]:
        """A model's versions, with their input and output signatures."""
        return self._run(self._get(f"{_model_path(model)}/versions"))["items"]

    def models(
        self,
        q: Optional[str] = None,
        *,
        task: Optional[str] = None,
        owner: Optional[str] = None,
        sort: Optional[str] = None,
        limit: Optional[int] = 100,
    ) -> List[Dict[str, Any]]:
        """The catalogue (pages followed up to ``limit``; None: all)."""
        return self._run(self._models({"q": q, "task": task, "owner": owner, "sort": sort}, limit))

    def search(self, q: str, **filters: Any) -> List[Dict[str, Any]]:
        """Models matching ``q``."""
        return self.models(q, **filters)

    # Inference.

    def infer(
        self,
        model: str,
        inputs: Optional[Mapping[str, Any]] = None,
        *,
        version: Optional[int] = None,
        app: Optional[str] = None,
        idempotency_key: Optional[str] = None,
        binary: Optional[bool] = None,
        **arrays: Any,
    ) -> InferResult:
        """Runs ``owner/name`` on numpy arrays (``inputs={...}`` or keyword
        arguments), paying its price. Large inputs travel as a binary body
        (``binary`` forces either way); outputs come back with their exact
        dtype and shape. Every call carries an Idempotency-Key (given, or a
        new one), so a call sent again after a dropped connection is charged
        once."""
        named = {**(inputs or {}), **arrays}
        return self._run(self._infer(model, named, version, app, idempotency_key, binary))

    def verify_receipt(self, receipt: Receipt) -> Checkpoint:
        """See :meth:`Receipt.verify`."""
        return self._run(self._verify_receipt(receipt))

    def receipt(self, index: int) -> Receipt:
        """Receipt (leaf) ``index`` from the log."""
        return Receipt.from_json(self._run(self._get(f"/v1/receipts/{index}")), self)

    # Stats.

    def earnings(
        self,
        group_by: str = "model",
        *,
        bucket: str = "day",
        start: Optional[str] = None,
        end: Optional[str] = None,
    ) -> Any:
        """The key's earnings per bucket and model (or app): a DataFrame with
        pandas, else a list of dicts (``t``, ``group``, ``calls``, ``earned``)."""
        params = {"group_by": group_by, "bucket": bucket, "from": start, "to": end}
        view = self._run(self._get("/v1/account/earnings", params))
        return _frame(view["series"], amounts=("earned",), token=self._run(self._token()))


class Stats:
    """The market's usage, as DataFrames when pandas is installed."""

    def __init__(self, client: Client):
        self._client = client

    def _token(self) -> Tuple[str, int]:
        return self._client._run(self._client._token())

    def market(self, window: str = "7d", by: str = "model") -> Any:
        """Calls, revenue and share per model (or creator, task, app, node)
        over ``window``; the headline figures are in ``.attrs`` of the
        DataFrame (or use :meth:`market_view` for the whole answer)."""
        view = self.market_view(window, by)
        frame = _frame(view["items"], amounts=("revenue",), token=self._token())
        if hasattr(frame, "attrs"):
            frame.attrs.update({k: v for k, v in view.items() if k not in ("items", "models", "lorenz")})
        return frame

    def market_view(self, window: str = "7d", by: str = "model") -> Dict[str, Any]:
        """``GET /v1/stats/market`` as it is."""
        return self._client._run(self._client._get("/v1/stats/market", {"window": window, "by": by}))

    def model(self, model: str, bucket: str = "day", start: Optional[str] = None, end: Optional[str] = None) -> Any:
        """One model's series: calls, revenue, errors, distinct callers, latency."""
        params = {"bucket": bucket, "from": start, "to": end}
        view = self._client._run(self._client._get(f"/v1/stats/models/{model}", params))
        return _frame(view["series"], amounts=("revenue",), token=self._token())

    def tasks(self) -> Any:
        """Demand per task."""
        view = self._client._run(self._client._get("/v1/stats/tasks"))
        return _frame(view["items"], amounts=("revenue", "median_price"), token=self._token())

    def trending(self, window: str = "7d") -> Any:
        """Models whose calls grow fastest."""
        return _frame(self._client._run(self._client._get("/v1/stats/trending", {"window": window}))["items"])


def _async_content(content: Union[bytes, Iterable[bytes], None]) -> Any:
    """A request body for httpx.AsyncClient: bytes as they are, chunks as an
    async iterator (so an upload's progress is reported as it goes)."""
    if content is None or isinstance(content, bytes):
        return content

    async def chunks() -> Any:
        for chunk in content:
            yield chunk

    return chunks()


class AsyncClient(_Base):
    """The same operations as :class:`Client`, awaitable (``httpx.AsyncClient``)."""

    def __init__(
        self,
        url: Optional[str] = None,
        key: Optional[str] = None,
        *,
        log_key: Optional[str] = None,
        witnesses: Iterable[str] = (),
        retries: int = 3,
        timeout: float = 60.0,
        http: Optional[httpx.AsyncClient] = None,
        wallet: Any = None,
        max_payment: Optional[int] = None,
    ):
        super().__init__(
            url,
            key,
            log_key=log_key,
            witnesses=witnesses,
            retries=retries,
            timeout=timeout,
            wallet=wallet,
            max_payment=max_payment,
        )
        self._http = http or httpx.AsyncClient(timeout=timeout)

    async def aclose(self) -> None:
        """Closes the client's connections."""
        await self._http.aclose()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def _send(self, request: _Request) -> _Answer:
        import asyncio  # noqa: PLC0415

        attempt = 0
        while True:
            try:
                response = await self._http.request(
                    request.method,
                    self.url + request.path,
                    params=request.params,
                    json=request.json,
                    content=_async_content(request.content),
                    headers=self._headers(request),
                )
                answer = _Answer(response.status_code, response.headers, await response.aread())
            except _RETRIED:
                if attempt >= request.retries:
                    raise
                attempt += 1
                await asyncio.sleep(0.1 * attempt)
                continue
            delay = _retry_delay(answer) if attempt < request.retries else None
            if delay is None:
                return answer
            attempt += 1
            await asyncio.sleep(delay)

    async def _run(self, operation: Operation) -> Any:
        try:
            request = next(operation)
            while True:
                request = operation.send(await self._send(request))
        except StopIteration as done:
            return done.value

    @classmethod
    async def signup(cls, name: str, url: Optional[str] = None, **options: Any) -> "AsyncClient":
        """See :meth:`Client.signup`."""
        client = cls(url, None, **options)
        _, key = await client._run(client._create_account(name))
        client.key = key
        return client

    async def account(self) -> Dict[str, Any]:
        """See :meth:`Client.account`."""
        return await self._run(self._account())

    async def balance(self) -> int:
        """See :meth:`Client.balance`."""
        return (await self.account())["balance"]

    async def transfers(self, limit: Optional[int] = None) -> List[Dict[str, Any]]:
        """See :meth:`Client.transfers`."""
        return await self._run(self._transfers(limit))

    async def deposit(self, account: str, amount: Union[int, str], reference: str) -> Dict[str, Any]:
        """See :meth:`Client.deposit`."""
        return await self._run(self._deposit(account, amount, reference))

    async def create_model(self, name: str, task: str, *, price: Union[int, str, None] = None, **fields: Any) -> Dict[str, Any]:
        """See :meth:`Client.create_model`."""
        return await self._run(self._create_model(name, task, price_per_inference=price, **fields))

    async def push(
        self,
        model: str,
        file: Union[str, bytes, "os.PathLike[str]"],
        progress: Optional[Callable[[int, int], None]] = None,
        piece_bytes: Optional[int] = None,
    ) -> Dict[str, Any]:
        """See :meth:`Client.push`."""
        import asyncio  # noqa: PLC0415

        source = _Source(file)
        piece_bytes = source.pieces(piece_bytes)
        if not piece_bytes:
            return await self._run(self._push(model, source, progress))
        upload = _Upload()
        for attempt in range(self._retries + 1):
            try:
                return await self._run(self._push_in_pieces(model, source, piece_bytes, progress, upload))
            except Exception as error:  # noqa: BLE001 - resumed or raised below
                if attempt == self._retries or not _resumable(error):
                    raise
                await asyncio.sleep(0.25 * 2**attempt)
        raise AssertionError("unreachable")

    async def set_price(self, model: str, price: Union[int, str]) -> Dict[str, Any]:
        """See :meth:`Client.set_price`."""
        return await self._run(self._set_price(model, price))

    async def models(self, q: Optional[str] = None, *, limit: Optional[int] = 100, **filters: Any) -> List[Dict[str, Any]]:
        """See :meth:`Client.models`."""
        return await self._run(self._models({"q": q, **filters}, limit))

    async def infer(
        self,
        model: str,
        inputs: Optional[Mapping[str, Any]] = None,
        *,
        version: Optional[int] = None,
        app: Optional[str] = None,
        idempotency_key: Optional[str] = None,
        binary: Optional[bool] = None,
        **arrays: Any,
    ) -> InferResult:
        """See :meth:`Client.infer`."""
        named = {**(inputs or {}), **arrays}
        return await self._run(self._infer(model, named, version, app, idempotency_key, binary))

    async def verify_receipt(self, receipt: Receipt) -> Checkpoint:
        """See :meth:`Receipt.verify`."""
        return await self._run(self._verify_receipt(receipt))
