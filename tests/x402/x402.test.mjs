// Payments by the official x402 clients (@x402/fetch and @x402/evm, from
// npm) against a real `vitrine serve` on a private chain (anvil:
// VITRINE_TEST_ANVIL) with a token of its own (fixtures/chain): a call
// without an account (the 402, the signed retry, the settlement on the
// chain, the split in the ledger, the receipt naming the payer; the same
// payment refused when sent again), and a top-up of a prepaid balance.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync, readdirSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createPublicClient, createWalletClient, http, parseAbi, defineChain } from 'viem';
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts';
import { createServer } from 'node:http';
import { publicActions } from 'viem';
import { wrapFetchWithPaymentFromConfig, decodePaymentResponseHeader } from '@x402/fetch';
import { ExactEvmScheme, toFacilitatorEvmSigner } from '@x402/evm';
import { x402Facilitator } from '@x402/core/facilitator';
import { registerExactEvmScheme } from '@x402/evm/exact/facilitator';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const BINARY = process.env.VITRINE_BIN ?? join(root, 'target', 'debug', 'vitrine');
const RPC = process.env.VITRINE_TEST_ANVIL;
const NETWORK = 'eip155:31337';
const PRICE = 2_000_000n; // minor units: 0.002 OPG
const PRICE_IN_TOKEN = PRICE * 10n ** 9n; // 18 decimals

const anvil = defineChain({
  id: 31337, name: 'anvil', nativeCurrency: { name: 'Ether', symbol: 'ETH', decimals: 18 },
  rpcUrls: { default: { http: [RPC] } },
});
const chain = createPublicClient({ chain: anvil, transport: http(RPC) });
const erc20 = parseAbi([
  'function mint(address to, uint256 amount)',
  'function balanceOf(address owner) view returns (uint256)',
]);

let server;
let base;
let alice;
let operatorKey;
let token;
let market;

async function fund(address) {
  await chain.request({ method: 'anvil_setBalance', params: [address, '0x56BC75E2D63100000'] });
}

async function wallet() {
  const account = privateKeyToAccount(generatePrivateKey());
  await fund(account.address);
  return { account, client: createWalletClient({ account, chain: anvil, transport: http(RPC) }) };
}

/// `fetch` paying with the official client from `account`'s wallet; each
/// request's `PAYMENT-SIGNATURE` (or null) pushed to `sent` if given.
function payingFetch(account, sent) {
  const recording = (input, init) => {
    const request = new Request(input, init);
    sent?.push(request.headers.get('PAYMENT-SIGNATURE'));
    return fetch(request);
  };
  return wrapFetchWithPaymentFromConfig(recording, {
    schemes: [{ network: NETWORK, client: new ExactEvmScheme(account) }],
    // The test token is no default asset of the client: allowed by name.
    spendControls: { allowedAssets: [{ network: NETWORK, asset: token }] },
  });
}

function api(method, path, options) {
  return apiAt(base, method, path, options);
}

async function apiAt(url, method, path, { key, body, bytes } = {}) {
  const headers = {};
  if (key) headers.Authorization = `Bearer ${key}`;
  let payload;
  if (bytes) {
    headers['Content-Type'] = 'application/octet-stream';
    payload = bytes;
  } else if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    payload = JSON.stringify(body);
  }
  const response = await fetch(url + path, { method, headers, body: payload });
  return { status: response.status, body: await response.json().catch(() => null) };
}

before(async () => {
  assert.ok(RPC, 'VITRINE_TEST_ANVIL: the URL of a private anvil (scripts/anvil)');
  // The token: OpenZeppelin's ERC-20 with EIP-3009, as the Rust tests deploy it.
  const artifact = JSON.parse(readFileSync(join(root, 'fixtures', 'chain', 'TestToken.json'), 'utf8'));
  const deployer = await wallet();
  const hash = await deployer.client.deployContract({
    abi: artifact.abi, bytecode: artifact.bytecode, args: ['OpenGradient', 'OPG', '2', 18],
  });
  token = (await chain.waitForTransactionReceipt({ hash })).contractAddress;

  // The market's key, with ether for the gas of its settlements.
  const started = await serve({ funded: true });
  ({ server, base, operatorKey, market } = started);
  alice = started.alice;
});

/// A market on the test token (with `extra` settings in its chain table),
/// its key funded with ether if `funded`, and a creator, alice, with a
/// priced model.
async function serve({ funded, extra = '' }) {
  const dir = mkdtempSync(join(tmpdir(), 'vitrine-x402-'));
  const marketKey = generatePrivateKey();
  const address = privateKeyToAccount(marketKey).address;
  if (funded) await fund(address);
  const keyFile = join(dir, 'market.key');
  writeFileSync(keyFile, marketKey + '\n');
  chmodSync(keyFile, 0o600);
  const setting = `chain={rpc_url = "${RPC}", network = "${NETWORK}", token = "${token}", key_file = "${keyFile}", confirmations = 1${extra}}`;
  const dataDir = join(dir, 'data');
  const child = spawn(BINARY, ['serve', '--data-dir', dataDir, '--listen', '127.0.0.1:0', '--set', setting], {
    stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, RUST_LOG: 'warn' },
  });
  const url = await new Promise((resolveUrl, reject) => {
    let seen = '';
    child.stdout.on('data', (chunk) => {
      seen += chunk;
      const match = seen.match(/listening on (http:\/\/\S+)/);
      if (match) resolveUrl(match[1]);
    });
    child.on('exit', (code) => reject(new Error(`the server exited (${code}) before listening`)));
  });
  const operator = readFileSync(join(dataDir, readdirSync(dataDir).find((f) => f.includes('operator'))), 'utf8').trim();
  const call = (method, path, options) => apiAt(url, method, path, options);
  const creator = (await call('POST', '/v1/accounts', { body: { name: 'alice' } })).body.api_key;
  assert.equal((await call('POST', '/v1/models', { key: creator, body: { name: 'linear', task: 'other' } })).status, 201);
  const model = readFileSync(join(root, 'fixtures', 'models', 'linear.onnx'));
  assert.equal((await call('POST', '/v1/models/alice/linear/versions', { key: creator, bytes: model })).status, 201);
  const patch = { price_per_inference: PRICE.toString() };
  assert.equal((await call('PATCH', '/v1/models/alice/linear', { key: creator, body: patch })).status, 200);
  return { server: child, base: url, operatorKey: operator, market: address, alice: creator, api: call };
}

after(() => server?.kill('SIGTERM'));

test('the official x402 client pays a call without an account, and the creator is paid', async () => {
  const payer = await wallet();
  const mint = await payer.client.writeContract({ address: token, abi: erc20, functionName: 'mint', args: [payer.account.address, PRICE_IN_TOKEN * 2n] });
  await chain.waitForTransactionReceipt({ hash: mint });

  // What the client sends, kept to send its payment again by hand below.
  const sent = [];
  const paying = payingFetch(payer.account, sent);
  const body = JSON.stringify({ inputs: { x: { dtype: 'f32', shape: [1, 4], data: [1, 2, 3, 4] } } });
  const init = { method: 'POST', headers: { 'Content-Type': 'application/json' }, body };
  const response = await paying(`${base}/v1/models/alice/linear/infer`, init);
  const answer = await response.json();
  assert.equal(response.status, 200, JSON.stringify(answer));
  const settled = decodePaymentResponseHeader(response.headers.get('PAYMENT-RESPONSE'));
  assert.equal(settled.success, true);
  assert.equal(settled.network, NETWORK);
  assert.equal(settled.payer.toLowerCase(), payer.account.address.toLowerCase());
  assert.equal(answer.price, PRICE.toString());
  assert.equal(answer.receipt.caller, `${NETWORK}:${payer.account.address.toLowerCase()}`);
  assert.equal(answer.receipt.settlement, settled.transaction);

  // On the chain: the price moved from the payer to the market.
  const receipt = await chain.getTransactionReceipt({ hash: settled.transaction });
  assert.equal(receipt.status, 'success');
  console.log(`settlement gas: ${receipt.gasUsed}`);
  assert.equal(await chain.readContract({ address: token, abi: erc20, functionName: 'balanceOf', args: [market] }), PRICE_IN_TOKEN);
  assert.equal(await chain.readContract({ address: token, abi: erc20, functionName: 'balanceOf', args: [payer.account.address] }), PRICE_IN_TOKEN);

  // In the ledger: the creator's share (80 %), the node's and the treasury's.
  const balance = async (name) => (await api('GET', `/v1/admin/accounts/${name}`, { key: operatorKey })).body.balance;
  assert.equal(await balance('alice'), (PRICE * 80n / 100n).toString());
  assert.equal(await balance('node-local'), (PRICE * 15n / 100n).toString());
  assert.equal(await balance('treasury'), (PRICE * 5n / 100n).toString());

  // The first try went without a payment (402), the retry with one.
  assert.deepEqual(sent.map((s) => s !== null), [false, true]);
  // The same payment sent again: refused, nothing moves.
  const again = await fetch(`${base}/v1/models/alice/linear/infer`, {
    ...init, headers: { ...init.headers, 'PAYMENT-SIGNATURE': sent[1] },
  });
  assert.equal(again.status, 402);
  assert.equal((await again.json()).error.code, 'payment_invalid');
  assert.ok(again.headers.get('PAYMENT-REQUIRED'));
  assert.equal(await chain.readContract({ address: token, abi: erc20, functionName: 'balanceOf', args: [market] }), PRICE_IN_TOKEN);
});

test('the official x402 client tops up a balance, credited once final', async () => {
  const payer = await wallet();
  const mint = await payer.client.writeContract({ address: token, abi: erc20, functionName: 'mint', args: [payer.account.address, PRICE_IN_TOKEN * 10n] });
  await chain.waitForTransactionReceipt({ hash: mint });
  const bob = (await api('POST', '/v1/accounts', { body: { name: 'bob' } })).body.api_key;
  const paying = payingFetch(payer.account);
  // The market credits a top-up once `confirmations` blocks stand on it: mined here.
  const mining = setInterval(() => chain.request({ method: 'anvil_mine', params: ['0x1'] }).catch(() => {}), 200);
  try {
    const response = await paying(`${base}/v1/account/topup`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${bob}` },
      body: JSON.stringify({ amount: (PRICE * 3n).toString() }),
    });
    const answer = await response.json();
    assert.equal(response.status, 200, JSON.stringify(answer));
    const settled = decodePaymentResponseHeader(response.headers.get('PAYMENT-RESPONSE'));
    assert.equal(answer.transaction, settled.transaction);
    assert.equal(answer.transfer.kind, 'deposit');
    assert.equal(answer.transfer.amount, (PRICE * 3n).toString());
  } finally {
    clearInterval(mining);
  }
  const account = (await api('GET', '/v1/account', { key: bob })).body;
  assert.equal(account.balance, (PRICE * 3n).toString());
  // The balance pays calls with no payment each.
  const body = { inputs: { x: { dtype: 'f32', shape: [1, 4], data: [1, 2, 3, 4] } } };
  assert.equal((await api('POST', '/v1/models/alice/linear/infer', { key: bob, body })).status, 200);
  assert.equal((await api('GET', '/v1/account', { key: bob })).body.balance, (PRICE * 2n).toString());
});

test('a market with an outside facilitator has payments verified and settled by it', async () => {
  // The official facilitator (@x402/core, @x402/evm) behind a bare HTTP
  // server: POST /verify and /settle, with a key of its own that pays the gas.
  const paymaster = await wallet();
  const client = paymaster.client.extend(publicActions);
  const signer = toFacilitatorEvmSigner({
    address: paymaster.account.address,
    readContract: (args) => client.readContract(args),
    verifyTypedData: (args) => client.verifyTypedData(args),
    writeContract: (args) => client.writeContract(args),
    sendTransaction: (args) => client.sendTransaction(args),
    waitForTransactionReceipt: (args) => client.waitForTransactionReceipt(args),
    getCode: (args) => client.getCode(args),
  });
  const facilitator = new x402Facilitator();
  registerExactEvmScheme(facilitator, { signer, networks: NETWORK });
  const asked = [];
  const http402 = createServer(async (request, response) => {
    let text = '';
    for await (const chunk of request) text += chunk;
    asked.push(request.url);
    const { paymentPayload, paymentRequirements } = JSON.parse(text || '{}');
    const answer = request.url === '/verify' ? await facilitator.verify(paymentPayload, paymentRequirements)
      : request.url === '/settle' ? await facilitator.settle(paymentPayload, paymentRequirements) : null;
    response.writeHead(answer ? 200 : 404, { 'Content-Type': 'application/json' });
    response.end(JSON.stringify(answer ?? {}));
  });
  await new Promise((listening) => http402.listen(0, '127.0.0.1', listening));
  const facilitatorUrl = `http://127.0.0.1:${http402.address().port}`;
  // The market's key holds no ether: the facilitator pays for settlements.
  const other = await serve({ funded: false, extra: `, facilitator_url = "${facilitatorUrl}"` });
  try {
    const payer = await wallet();
    const mint = await payer.client.writeContract({ address: token, abi: erc20, functionName: 'mint', args: [payer.account.address, PRICE_IN_TOKEN] });
    await chain.waitForTransactionReceipt({ hash: mint });
    const sent = [];
    const paying = payingFetch(payer.account, sent);
    const body = JSON.stringify({ inputs: { x: { dtype: 'f32', shape: [1, 4], data: [1, 2, 3, 4] } } });
    const init = { method: 'POST', headers: { 'Content-Type': 'application/json' }, body };
    const response = await paying(`${other.base}/v1/models/alice/linear/infer`, init);
    const answer = await response.json();
    assert.equal(response.status, 200, JSON.stringify(answer));
    assert.deepEqual(asked, ['/verify', '/settle']);
    const settled = decodePaymentResponseHeader(response.headers.get('PAYMENT-RESPONSE'));
    assert.equal(answer.receipt.settlement, settled.transaction);
    // Sent by the facilitator's key, paid to the market.
    const transaction = await chain.getTransaction({ hash: settled.transaction });
    assert.equal(transaction.from.toLowerCase(), paymaster.account.address.toLowerCase());
    assert.equal(await chain.readContract({ address: token, abi: erc20, functionName: 'balanceOf', args: [other.market] }), PRICE_IN_TOKEN);
    const balance = (await other.api('GET', '/v1/admin/accounts/alice', { key: other.operatorKey })).body.balance;
    assert.equal(balance, (PRICE * 80n / 100n).toString());
    // The same payment again: refused by the market's own claim, nothing asked of the facilitator.
    const again = await fetch(`${other.base}/v1/models/alice/linear/infer`, {
      ...init, headers: { ...init.headers, 'PAYMENT-SIGNATURE': sent[1] },
    });
    assert.equal(again.status, 402);
    assert.equal((await again.json()).error.code, 'payment_invalid');
    // A payment the facilitator refuses (the payer spent its tokens): 402 with its reason, nothing runs.
    const broke = await wallet();
    const refused = await payingFetch(broke.account)(`${other.base}/v1/models/alice/linear/infer`, init);
    const refusal = await refused.json();
    assert.equal(refused.status, 402, JSON.stringify(refusal));
    assert.match(refusal.error.message, /facilitator refused/);
    assert.equal(asked.filter((path) => path === '/settle').length, 1);
  } finally {
    other.server.kill('SIGTERM');
    http402.close();
  }
});
