"""The Python client against a real server: every method, every error
class, retries charged once, receipts verified and tampering refused, every
dtype bit for bit, large arrays through the binary body, stats as DataFrames."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import socket
import subprocess
import sys
import threading
from typing import Any

import httpx
import ml_dtypes
import numpy as np
import pytest

import vitrine
from vitrine.errors import error_from

from conftest import BINARY, FIXTURES

LINEAR = (FIXTURES / "linear.onnx").read_bytes()
X = np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32)


def publish(client: vitrine.Client, name: str, fixture: str = "linear.onnx", price: Any = 0, **fields) -> str:
    owner = client.account()["name"]
    client.create_model(name, "regression", price=price, **fields)
    client.push(f"{owner}/{name}", FIXTURES / fixture)
    return f"{owner}/{name}"


def test_accounts_balance_and_transfers(server):
    alice = server.account("alice", deposit=5_000)
    account = alice.account()
    assert account["name"] == "alice"
    assert account["balance"] == 5_000 and alice.balance() == 5_000
    assert isinstance(account["held"], int) and isinstance(account["earned_total"], int)
    transfers = alice.transfers()
    assert [(t["kind"], t["amount"]) for t in transfers] == [("deposit", 5_000)]


def test_models_create_push_with_progress_price_list_and_search(server):
    carol = server.account("carol")
    created = carol.create_model("lin", "regression", description="a linear regressor", tags=["demo"])
    assert created["owner"] == "carol" and created["price_per_inference"] == "0"
    progress = []
    version = carol.push("carol/lin", str(FIXTURES / "mlp.onnx"), progress=lambda sent, total: progress.append((sent, total)))
    total = (FIXTURES / "mlp.onnx").stat().st_size
    assert version["version"] == 1 and version["size_bytes"] == total
    assert progress and progress[-1] == (total, total)
    assert [p[0] for p in progress] == sorted(p[0] for p in progress)
    assert carol.set_price("carol/lin", 1_500)["price_per_inference"] == "1500"
    assert carol.model("carol/lin")["price_per_inference"] == "1500"
    assert [v["version"] for v in carol.versions("carol/lin")] == [1]
    assert carol.update_model("carol/lin", description="changed")["description"] == "changed"
    assert [m["name"] for m in carol.models(owner="carol")] == ["lin"]
    assert any(m["name"] == "lin" for m in carol.search("lin"))
    assert carol.models(task="regression", limit=1)


def test_amounts_people_write_are_tokens_and_what_they_read_is_in_tokens(server):
    owner = server.account("tokens-owner", deposit=10_000_000)
    # The market's token has 9 decimals: 0.002 tokens are 2,000,000 minor units.
    model = publish(owner, "priced", price=vitrine.tokens("0.002"))
    assert owner.model(model)["price_per_inference"] == "2000000"
    assert owner.set_price(model, "0.0015")["price_per_inference"] == "1500000"
    assert owner.set_price(model, 7)["price_per_inference"] == "7", "an int is minor units"
    with pytest.raises(ValueError, match="more than the token's 9 decimals"):
        owner.set_price(model, vitrine.tokens("0.0000000001"))
    for wrong in ("abc", "-1", "1e3x"):
        with pytest.raises(ValueError):
            owner.set_price(model, wrong)
    with pytest.raises(ValueError):
        vitrine.tokens("-0.5")
    assert vitrine.format_tokens(2_110_900_000, "OPG", 9) == "2.1109 OPG"
    assert vitrine.format_tokens(1_234_567 * 10**9, "OPG", 9) == "1,234,567 OPG"
    owner.set_price(model, vitrine.tokens("0.002"))
    short = server.account("tokens-short", deposit=1_000_000)
    with pytest.raises(vitrine.InsufficientBalance) as refused:
        short.infer(model, x=X)
    # The refusal speaks tokens, not minor units.
    assert "0.001 OPG" in refused.value.message and "0.002 OPG" in refused.value.message, refused.value.message
    paid = server.account("tokens-payer", deposit=10_000_000).infer(model, x=X)
    assert paid.price == 2_000_000 and paid.price_tokens == "0.002 OPG"
    assert "price='0.002 OPG'" in repr(paid) and "float32" in repr(paid)


class _BreakingLink(httpx.BaseTransport):
    """A real transport whose 2nd and 4th pieces reach the server, then
    their answers are lost: a link that breaks under an upload."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.pieces = 0
        self.lost = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.method == "PATCH":
            self.pieces += 1
            if self.pieces in (2, 4):
                response.read()
                response.close()
                self.lost += 1
                raise httpx.ReadError("the link broke", request=request)
        return response


def test_a_push_in_pieces_resumes_where_the_server_stands_after_a_broken_link(server):
    erin = server.account("erin")
    erin.create_model("digits", "classification")
    link = _BreakingLink()
    client = vitrine.Client(server.url, erin.key, http=httpx.Client(transport=link))
    model = FIXTURES / "mnist_mlp.onnx"
    progress = []
    version = client.push("erin/digits", model, piece_bytes=64 * 1024, progress=lambda sent, total: progress.append(sent))
    data = model.read_bytes()
    assert version["version"] == 1 and version["blob_sha256"] == hashlib.sha256(data).hexdigest()
    # Two answers were lost; the pieces were not sent twice but picked up
    # from the server's offset.
    assert link.lost == 2 and link.pieces == -(-len(data) // (64 * 1024))
    assert progress[-1] == len(data)
    # A file pushed whole from its path, streamed: the same version again.
    assert client.push("erin/digits", model)["blob_sha256"] == version["blob_sha256"]


def test_a_paid_call_returns_numpy_and_a_receipt_that_verifies_and_tampering_is_refused(server):
    alice = server.account("dora", deposit=100_000)
    model = publish(alice, "paid", price=1_001)
    bob = server.account("bob", deposit=100_000)
    result = bob.infer(model, x=X, app="notebook")
    (name,) = result.outputs
    assert result[name].dtype == np.float32 and result[name].shape[0] == 1
    assert (result.price, result.version, result.sent_as) == (1_001, 1, "json")
    receipt = result.receipt
    assert receipt is not None and receipt.log_index == result.log_index
    assert receipt.app == "notebook" and receipt.price == "1001"
    # The leaf's digests are those of bob's own arrays.
    assert receipt.decoded.input_sha256 == vitrine.tensors_sha256({"x": X})
    assert receipt.decoded.output_sha256 == vitrine.tensors_sha256(result.outputs)
    checkpoint = receipt.verify()
    assert checkpoint.size > receipt.log_index
    assert bob.balance() == 100_000 - 1_001

    flipped = vitrine.Receipt.from_json({**receipt.fields}, bob)
    flipped.leaf = flipped.leaf[:-40] + bytes([flipped.leaf[-40] ^ 1]) + flipped.leaf[-39:]
    with pytest.raises(vitrine.ReceiptInvalid):
        flipped.verify()
    cheaper = vitrine.Receipt.from_json({**receipt.fields, "price": "1000"}, bob)
    with pytest.raises(vitrine.ReceiptInvalid, match="price"):
        cheaper.verify()
    other_outputs = vitrine.Receipt.from_json(receipt.fields, bob)
    other_outputs.outputs = {name: result[name] + 1}
    with pytest.raises(vitrine.ReceiptInvalid, match="output_sha256"):
        other_outputs.verify()
    forged = vitrine.Receipt.from_json(receipt.fields, bob)
    forged.signature = bytes(64)
    with pytest.raises(vitrine.ReceiptInvalid, match="signature"):
        forged.verify()
    # A pinned key the server does not have: refused.
    other_key = vitrine.Client(server.url, bob.key, log_key="vitrine.local/log+00000000+AQ" + "A" * 43)
    with pytest.raises((vitrine.ReceiptInvalid, ValueError)):
        other_key.verify_receipt(receipt)
    # The receipt by index is the same leaf.
    assert bob.receipt(receipt.log_index).leaf == receipt.leaf


def test_a_leaf_paid_on_the_chain_names_its_payer_and_settlement():
    def text(value: str) -> bytes:
        return bytes([len(value)]) + value.encode()

    payer, settlement = "eip155:31337:0x" + "ab" * 20, "0x" + "cd" * 32
    head = bytes([3]) + (1_764_100_000_000).to_bytes(8, "big") + text("alice/linear") + (1).to_bytes(4, "big")
    body = bytes(32) + bytes(32) + text("") + text("node-local") + text("regression")
    money = b"".join(n.to_bytes(8, "big") for n in (100, 80, 15, 5))
    tail = bytes(96) + text("")
    leaf = vitrine.log.Leaf.decode(head + body + money + tail + text(payer) + text(settlement))
    assert (leaf.format, leaf.payer, leaf.settlement, leaf.price) == (3, payer, settlement, 100)
    with pytest.raises(vitrine.ReceiptInvalid, match="payer"):
        vitrine.log.Leaf.decode(head + body + money + tail + text("") + text(settlement))
    with pytest.raises(vitrine.ReceiptInvalid, match="ends early"):
        vitrine.log.Leaf.decode(head + body + money + tail + text(payer))


def extremes() -> dict[str, np.ndarray]:
    arrays = {}
    for name, dtype in vitrine.tensors.DTYPES.items():
        # The model's inputs share one length, N = 10.
        if name == "bool":
            arrays[name] = np.array([True, False] * 5, dtype=dtype)
        elif name in vitrine.tensors.FLOATS:
            info = ml_dtypes.finfo(dtype)
            arrays[name] = np.array(
                [0.0, -0.0, info.max, info.min, info.tiny, info.smallest_subnormal, np.inf, -np.inf, np.nan, 0.1],
                dtype=dtype,
            )
        else:
            info = np.iinfo(dtype)
            arrays[name] = np.array([info.min, info.max, 0, 1, info.min + 1, info.max - 1, 2, 3, 42, 7], dtype=dtype)
    return arrays


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@pytest.mark.parametrize("binary", [False, True])
def test_every_dtype_round_trips_bit_for_bit(server, binary):
    owner = server.account(f"eve{int(binary)}")
    model = publish(owner, "identity", fixture="every_dtype.onnx")
    arrays = extremes()
    result = owner.infer(model, arrays, binary=binary)
    assert result.sent_as == ("binary" if binary else "json")
    for name, array in arrays.items():
        assert same_bits(result[f"{name}_out"], array), name


def test_large_arrays_travel_through_the_binary_body(server):
    seen = []
    hook = httpx.Client(event_hooks={"request": [lambda request: seen.append(request.headers.get("content-type"))]})
    frank = server.account("frank")
    client = vitrine.Client(server.url, frank.key, http=hook)
    model = publish(client, "identity", fixture="every_dtype.onnx")
    rng = np.random.default_rng(7)
    big = {name: np.zeros(50_000, dtype=dtype) for name, dtype in vitrine.tensors.DTYPES.items()}
    big["f32"] = rng.standard_normal(50_000).astype(np.float32)
    result = client.infer(model, big)
    assert result.sent_as == "binary" and seen[-1] == "application/octet-stream"
    assert same_bits(result["f32_out"], big["f32"])
    small = client.infer(model, {name: a[:3] for name, a in big.items()})
    assert small.sent_as == "json" and seen[-1] == "application/json"


class DroppingProxy:
    """Forwards connections to the server; the first time a request goes to
    `path`, it is forwarded but its answer is dropped (the connection closed)."""

    def __init__(self, target: str, path: str):
        host, port = target.removeprefix("http://").split(":")
        self.target = (host, int(port))
        self.path = path.encode()
        self.dropped = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        while True:
            client, _ = self.listener.accept()
            threading.Thread(target=self.relay, args=(client,), daemon=True).start()

    def relay(self, client: socket.socket) -> None:
        upstream = socket.create_connection(self.target)
        request = b""
        client.settimeout(2)
        try:
            while b"\r\n\r\n" not in request:
                request += client.recv(65536)
            head, _, body = request.partition(b"\r\n\r\n")
            length = next(
                (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")),
                0,
            )
            while len(body) < length:
                body += client.recv(65536)
            # One request per connection: the server closes it after answering.
            lines = [line for line in head.split(b"\r\n") if not line.lower().startswith(b"connection:")]
            upstream.sendall(b"\r\n".join(lines) + b"\r\nConnection: close\r\n\r\n" + body)
            answer = b""
            while chunk := upstream.recv(65536):
                answer += chunk
            if self.path in head and self.dropped == 0:
                self.dropped += 1
                client.close()  # the answer is lost on the way back
                return
            client.sendall(answer)
        finally:
            upstream.close()
            client.close()


def test_a_call_retried_after_a_dropped_connection_is_charged_once(server):
    alice = server.account("gina", deposit=0)
    model = publish(alice, "retried", price=700)
    henry = server.account("henry", deposit=10_000)
    proxy = DroppingProxy(server.url, "/infer")
    client = vitrine.Client(proxy.url, henry.key, retries=3)
    result = client.infer(model, x=X, idempotency_key="retry-once")
    assert proxy.dropped == 1, "the first answer was dropped"
    assert result.price == 700 and result.receipt is not None
    assert henry.balance() == 10_000 - 700, "charged once"
    assert sorted(t["amount"] for t in henry.transfers() if t["kind"].startswith("inference")) == [35, 105, 560]
    # Without retries, the dropped connection surfaces.
    dropping = DroppingProxy(server.url, "/infer")
    with pytest.raises(httpx.TransportError):
        vitrine.Client(dropping.url, henry.key, retries=0).infer(model, x=X)


def test_every_error_code_has_its_class():
    for code, cls in vitrine.ERRORS.items():
        error = error_from(418, {"error": {"code": code, "message": "why"}}, "7")
        assert type(error) is cls and error.code == code and error.status == 418 and error.message == "why"
        assert isinstance(error, vitrine.VitrineError)
    assert error_from(429, {"error": {"code": "rate_limited", "message": "m"}}, "7").retry_after == 7
    unknown = error_from(500, {"error": {"code": "something_new", "message": "m"}})
    assert type(unknown) is vitrine.VitrineError and unknown.code == "something_new"
    assert type(error_from(502, b"not json")) is vitrine.VitrineError


def test_the_server_s_errors_arrive_as_their_classes(make_server):
    # Eight calls (inferences and uploads) a minute per key: enough for the
    # owner's, and judy's loop below runs into it.
    server = make_server(
        {"calls_per_key_per_minute_max": "8", "tensor_elements_max": "1000", "inference_timeout_ms": "300"}
    )
    owner = server.account("ivan", deposit=1_000)
    model = publish(owner, "m", price=2_000)
    slow = publish(owner, "slow", fixture="slow.onnx")
    with pytest.raises(vitrine.Unauthorized):
        vitrine.Client(server.url, "vk_" + "0" * 40).account()
    with pytest.raises(vitrine.NotFound):
        owner.model("ivan/nothing")
    with pytest.raises(vitrine.Conflict):
        owner.create_model("m", "regression")
    with pytest.raises(vitrine.InvalidRequest):
        owner.create_model("n", "not-a-task")
    with pytest.raises(vitrine.InvalidModel):
        owner.push(model, b"not an onnx file")
    judy = server.account("judy")
    with pytest.raises(vitrine.Forbidden):
        judy.set_price(model, 1)
    with pytest.raises(vitrine.InsufficientBalance):
        judy.infer(model, x=X)
    owner.set_price(model, 0)
    with pytest.raises(vitrine.InvalidInput):
        judy.infer(model, x=np.ones((1, 3), np.float32))
    with pytest.raises(vitrine.PayloadTooLarge):
        owner.infer(model, x=np.ones((300, 4), np.float32))
    (spec,) = owner.versions(slow)[0]["inputs"]
    with pytest.raises(vitrine.InferenceTimeout):
        owner.infer(slow, {spec["name"]: np.ones([1 for _ in spec["shape"]], np.float32)})
    no_retries = vitrine.Client(server.url, judy.key, retries=0)
    with pytest.raises(vitrine.RateLimited) as limited:
        for _ in range(20):
            no_retries.infer(model, x=X)
    assert limited.value.retry_after >= 1
    owner.delete_model(model)
    with pytest.raises(vitrine.Gone):
        owner.infer(model, x=X)


def test_stats_and_earnings_are_dataframes_with_pandas_and_lists_without(server, monkeypatch):
    pandas = pytest.importorskip("pandas")
    kim = server.account("kim")
    model = publish(kim, "popular", price=100)
    lee = server.account("lee", deposit=10_000)
    for app in ("shop", "shop", "lab"):
        lee.infer(model, x=X, app=app)
    market = kim.stats.market(window="24h")
    assert isinstance(market, pandas.DataFrame)
    row = market[market["key"] == model].iloc[0]
    assert (row["calls"], row["revenue"]) == (3, 300)
    assert market.attrs["window"] == "24h" and market.attrs["calls"] >= 3
    earnings = kim.earnings(group_by="app", bucket="day")
    assert isinstance(earnings, pandas.DataFrame)
    assert dict(zip(earnings["group"], earnings["earned"])) == {"shop": 160, "lab": 80}
    # Beside the exact minor units, the same in tokens (9 decimals).
    assert dict(zip(earnings["group"], earnings["earned_tokens"])) == {"shop": 160e-9, "lab": 80e-9}
    assert list(market.columns).index("revenue_tokens") == list(market.columns).index("revenue") + 1
    assert str(earnings["t"].dtype).startswith("datetime64")
    assert isinstance(kim.stats.tasks(), pandas.DataFrame)
    assert len(kim.stats.model(model, bucket="hour")) >= 1
    monkeypatch.setitem(sys.modules, "pandas", None)
    plain = kim.stats.market(window="24h")
    assert isinstance(plain, list) and any(item["key"] == model for item in plain)
    assert isinstance(kim.earnings(group_by="model"), list)


def test_the_async_client_does_the_same(server):
    model = publish(server.account("otto"), "asyncable", price=50)
    owner = server.account("mia", deposit=1_000)

    async def session() -> None:
        async with vitrine.AsyncClient(server.url, owner.key) as client:
            assert (await client.account())["name"] == "mia"
            assert await client.balance() == 1_000
            results = await asyncio.gather(*(client.infer(model, x=X) for _ in range(4)))
            assert [r.price for r in results] == [50] * 4
            assert len({r.receipt.log_index for r in results}) == 4
            checkpoint = await client.verify_receipt(results[0].receipt)
            assert checkpoint.size > results[0].receipt.log_index
            assert await client.balance() == 1_000 - 4 * 50
            assert [m["name"] for m in await client.models(owner="otto")] == ["asyncable"]
            created = await client.create_model("second", "regression", price=5)
            assert created["price_per_inference"] == "5"
            assert (await client.push("mia/second", LINEAR))["version"] == 1
            assert (await client.set_price("mia/second", 6))["price_per_inference"] == "6"
            with pytest.raises(vitrine.NotFound):
                await client.infer("mia/nothing", x=X)
        signed_up = await vitrine.AsyncClient.signup("nina", server.url)
        assert (await signed_up.account())["name"] == "nina"
        await signed_up.aclose()

    asyncio.run(session())


def test_the_cli_s_configuration_is_read_when_no_key_is_given(server, tmp_path, monkeypatch):
    olga = server.account("olga")
    path = tmp_path / "client.toml"
    path.write_text(f'url = "{server.url}"\nkey = "{olga.key}"\n')
    monkeypatch.setenv("VITRINE_CLIENT_CONFIG", str(path))
    assert vitrine.Client().account()["name"] == "olga"
    monkeypatch.setenv("VITRINE_URL", "http://127.0.0.1:9")
    assert vitrine.Client().url == "http://127.0.0.1:9"


def test_verify_requires_the_cosignatures_of_the_witnesses_asked_for(make_server, tmp_path):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    seed = bytes([3]) * 32
    public = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()
    log = vitrine.VerifierKey("vitrine.local/log", 1, public)
    log_vkey = f"{log.name}+{log.key_id().hex()}+{base64.b64encode(bytes([1]) + public).decode()}"
    witness = subprocess.Popen(
        [BINARY, "witness", "--listen", "127.0.0.1:0", "--name", "w.test/w1", "--log", log_vkey,
         "--data-dir", str(tmp_path / "witness")],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        witness_vkey = witness.stdout.readline().removeprefix("witness key: ").strip()
        url = witness.stdout.readline().removeprefix("vitrine witness listening on ").strip()
        server = make_server({"witnesses": f'[{{url = "{url}", vkey = "{witness_vkey}"}}]'}, log_seed=seed)
        model = publish(server.account("pat"), "witnessed", price=10)
        quinn = server.account("quinn", deposit=1_000)
        receipt = vitrine.Client(server.url, quinn.key, witnesses=[witness_vkey]).infer(model, x=X).receipt
        checkpoint = receipt.verify()
        assert vitrine.VerifierKey.parse(witness_vkey).verify_cosignature(checkpoint.note) > 0
        stranger = "w.test/w2+" + vitrine.VerifierKey("w.test/w2", 4, bytes(range(32))).key_id().hex()
        stranger += "+" + base64.b64encode(bytes([4]) + bytes(range(32))).decode()
        with pytest.raises(vitrine.ReceiptInvalid, match="cosignature"):
            vitrine.Client(server.url, quinn.key, witnesses=[stranger]).verify_receipt(receipt)
    finally:
        witness.kill()
        witness.wait()
