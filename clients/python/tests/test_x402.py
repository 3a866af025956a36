"""A call paid with x402 from a wallet, no account, through the official
``x402`` package, against a real server on a private chain (anvil:
``VITRINE_TEST_ANVIL``, as ``scripts/test`` starts it) with a token of its
own (``fixtures/chain/TestToken.json``, deployed here with web3)."""

from __future__ import annotations

import json
import os
import secrets

import numpy as np
import pytest

import vitrine

from conftest import FIXTURES, ROOT

PRICE = 2_000_000  # minor units: 0.002 OPG
PRICE_IN_TOKEN = PRICE * 10**9  # 18 decimals


def anvil() -> str:
    url = os.environ.get("VITRINE_TEST_ANVIL", "")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("CI runs the chain tests: set VITRINE_TEST_ANVIL (scripts/anvil)")
        pytest.skip("no VITRINE_TEST_ANVIL")
    return url


def test_a_wallet_pays_a_call_with_x402_without_an_account(make_server, tmp_path):
    from eth_account import Account
    from web3 import Web3

    url = anvil()
    w3 = Web3(Web3.HTTPProvider(url))

    def funded() -> "Account":
        account = Account.create()
        w3.provider.make_request("anvil_setBalance", [account.address, hex(10**20)])
        return account

    def send(account, call) -> dict:
        fees = {"maxFeePerGas": 10**10, "maxPriorityFeePerGas": 10**9}
        tx = call.build_transaction(
            {"from": account.address, "nonce": w3.eth.get_transaction_count(account.address), "chainId": 31337, **fees}
        )
        hash_ = w3.eth.send_raw_transaction(account.sign_transaction(tx).raw_transaction)
        receipt = w3.eth.wait_for_transaction_receipt(hash_)
        assert receipt["status"] == 1
        return receipt

    artifact = json.loads((ROOT / "fixtures" / "chain" / "TestToken.json").read_text())
    deployer = funded()
    contract = w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
    token_address = send(deployer, contract.constructor("OpenGradient", "OPG", "2", 18))["contractAddress"]
    token = w3.eth.contract(address=token_address, abi=artifact["abi"])
    market_key = "0x" + secrets.token_hex(32)
    market = Account.from_key(market_key)
    w3.provider.make_request("anvil_setBalance", [market.address, hex(10**20)])
    key_file = tmp_path / "market.key"
    key_file.write_text(market_key + "\n")
    key_file.chmod(0o600)
    payer = funded()
    send(deployer, token.functions.mint(payer.address, PRICE_IN_TOKEN * 3))

    setting = (
        f'{{rpc_url = "{url}", network = "eip155:31337", token = "{token_address}", '
        f'key_file = "{key_file}", confirmations = 1}}'
    )
    server = make_server({"chain": setting})
    alice = server.account("alice")
    alice.create_model("linear", task="regression", price=PRICE)
    alice.push("alice/linear", FIXTURES / "linear.onnx")

    # A client with a wallet and no key: the 402, the payment, the answer.
    x = np.array([[1, 2, 3, 4]], dtype=np.float32)
    paying = vitrine.Client(server.url, None, wallet=payer.key.hex(), max_payment=PRICE_IN_TOKEN)
    paying.key = None  # whatever the environment's configuration holds
    result = paying.infer("alice/linear", x=x)
    assert result.price == PRICE
    assert result.receipt is not None
    assert result.receipt.caller == f"eip155:31337:{payer.address.lower()}"
    assert result.receipt.decoded.settlement == result.receipt.settlement
    result.receipt.check_offline()
    assert token.functions.balanceOf(market.address).call() == PRICE_IN_TOKEN
    assert alice.balance() == PRICE * 80 // 100

    # A cap below the price: the client refuses to pay, nothing moves.
    stingy = vitrine.Client(server.url, None, wallet=payer.key.hex(), max_payment=PRICE_IN_TOKEN - 1)
    stingy.key = None
    from x402.schemas.errors import NoMatchingRequirementsError

    with pytest.raises(NoMatchingRequirementsError, match="max_amount_per_payment"):
        stingy.infer("alice/linear", x=x)
    assert token.functions.balanceOf(market.address).call() == PRICE_IN_TOKEN
    # Without a wallet, the 402 is the caller's to read.
    with pytest.raises(vitrine.VitrineError) as refused:
        bare = vitrine.Client(server.url, None)
        bare.key = None
        bare.infer("alice/linear", x=x)
    assert refused.value.code == "payment_required"
    with pytest.raises(TypeError):
        vitrine.Client(server.url, None, wallet=payer.key.hex())
