// The dashboard, end to end, in a real browser: Debian's Chromium driven by
// playwright-core, against a server this test starts on a demo market.
// Run by scripts/browser-tests (which installs what it needs); screenshots
// go to target/artifacts/dashboard/.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createRequire } from 'node:module';
import { chromium } from 'playwright-core';
import { createPublicClient, createWalletClient, http as viemHttp, parseAbi, defineChain } from 'viem';
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts';

const require = createRequire(import.meta.url);
const AXE_SOURCE = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');
const ROOT = resolve(import.meta.dirname, '../..');
const BINARY = process.env.VITRINE_BIN || join(ROOT, 'target/debug/vitrine');
const ARTIFACTS = join(ROOT, 'target/artifacts/dashboard');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const FIXTURE = join(ROOT, 'fixtures/models/linear.onnx');
const LINEAR_INPUT = { x: { dtype: 'f32', shape: [1, 4], data: [1, 2, 3, 4] } };

let server;
let base;
let dataDir;
let operatorKey;
let browser;

// ---- The server and the API, as a client sees them -------------------------

async function startServer() {
  dataDir = mkdtempSync(join(tmpdir(), 'vitrine-browser-'));
  // A small demo market: real models, weeks of back-dated calls, three nodes.
  execFileSync(BINARY, ['demo', '--data-dir', dataDir, '--creators', '8', '--callers', '30', '--days', '14', '--calls', '2000'], {
    stdio: 'ignore', env: { ...process.env, RUST_LOG: 'warn' },
  });
  server = spawn(BINARY, ['serve', '--data-dir', dataDir, '--listen', '127.0.0.1:0', '--set', 'checkpoint_interval_ms=200'], {
    stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, RUST_LOG: 'warn' },
  });
  base = await new Promise((resolveUrl, reject) => {
    let seen = '';
    server.stdout.on('data', (chunk) => {
      seen += chunk;
      const match = seen.match(/listening on (http:\/\/\S+)/);
      if (match) resolveUrl(match[1]);
    });
    server.on('exit', (code) => reject(new Error(`the server exited (${code}) before listening`)));
  });
  operatorKey = readFileSync(join(dataDir, execFileSync('ls', [dataDir]).toString().split('\n').find((f) => f.includes('operator'))), 'utf8').trim();
}

async function call(method, path, { key, body, headers = {}, raw = false } = {}) {
  const init = { method, headers: { ...headers } };
  if (key) init.headers.Authorization = `Bearer ${key}`;
  if (body instanceof Uint8Array) {
    init.body = body;
    init.headers['Content-Type'] = 'application/octet-stream';
  } else if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers['Content-Type'] = 'application/json';
  }
  const response = await fetch(base + path, init);
  if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${await response.text()}`);
  return raw ? response.text() : response.json();
}

async function signup(name, deposit) {
  const { api_key: key } = await call('POST', '/v1/accounts', { body: { name } });
  if (deposit) await call('POST', '/v1/admin/deposits', { key: operatorKey, body: { account: name, amount: deposit, reference: `test-${name}` } });
  return key;
}

// ---- Pages -----------------------------------------------------------------

/** Opens `path` and records every console error and failed request. */
async function open(path, { width = 1280, bypassCSP = false } = {}) {
  const page = await browser.newPage({ viewport: { width, height: 900 }, acceptDownloads: true, bypassCSP });
  const problems = [];
  page.on('console', (message) => { if (message.type() === 'error') problems.push(`console: ${message.text()}`); });
  page.on('pageerror', (error) => problems.push(`script: ${error.message}`));
  page.on('requestfailed', (request) => problems.push(`failed: ${request.url()} ${request.failure()?.errorText}`));
  page.on('response', (response) => { if (response.status() >= 400) problems.push(`${response.status()}: ${response.url()}`); });
  const response = await page.goto(base + path, { waitUntil: 'networkidle' });
  return { page, problems, response };
}

/** axe-core's serious and critical findings on `path` (injected past the
 * page's CSP, which rightly refuses an inline script). */
async function seriousViolations(path) {
  const { page } = await open(path, { bypassCSP: true });
  await page.addScriptTag({ content: AXE_SOURCE });
  const results = await page.evaluate(async () => window.axe.run(document, { resultTypes: ['violations'] }));
  await page.close();
  return results.violations
    .filter((v) => v.impact === 'serious' || v.impact === 'critical')
    .map((v) => `${v.id} (${v.impact}): ${v.nodes.slice(0, 3).map((n) => n.target.join(' ')).join('; ')}`);
}

/** `data-value`s of a column of a table, as text. */
async function column(page, selector, index) {
  return page.$$eval(`${selector} tbody tr`, (rows, i) => rows.map((r) => r.children[i]?.dataset.value ?? null), index);
}

const shortName = (path) => (path === '/' ? 'market' : path.replace(/[^a-z0-9]+/gi, '-').replace(/^-|-$/g, ''));

before(async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  await startServer();
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--headless', '--no-sandbox', '--disable-gpu'] });
});

after(async () => {
  await browser?.close();
  server?.kill('SIGTERM');
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

// ---- The tests -------------------------------------------------------------

test('every page loads cleanly, is accessible, fits a phone, and is saved as a screenshot', async () => {
  const models = await call('GET', '/v1/models?sort=popular&limit=1');
  const top = models.items[0];
  const pages = ['/', '/?window=24h', '/?window=30d', '/?window=all', '/opportunities', '/catalogue', '/catalogue?sort=price&task=classification',
    `/models/${top.owner}/${top.name}`, `/creators/${top.owner}`, '/account', '/log', '/log?receipt=0'];
  for (const path of pages) {
    const { page, problems, response } = await open(path);
    assert.equal(response.status(), 200, path);
    const csp = response.headers()['content-security-policy'];
    assert.match(csp, /script-src 'self'/, `${path} is served with a strict CSP`);
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/, path);
    await page.screenshot({ path: join(ARTIFACTS, `${shortName(path)}.png`), fullPage: true });
    assert.deepEqual(problems, [], `${path} had console errors or failed requests`);
    await page.close();
    assert.deepEqual(await seriousViolations(path), [], `accessibility of ${path}`);

    const phone = await open(path, { width: 390 });
    const width = await phone.page.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(width <= 390, `${path} scrolls sideways at 390 px (${width} px wide)`);
    if (['/', `/models/${top.owner}/${top.name}`].includes(path)) {
      await phone.page.screenshot({ path: join(ARTIFACTS, `${shortName(path)}-390px.png`), fullPage: true });
    }
    assert.deepEqual(phone.problems, [], `${path} at 390 px`);
    await phone.page.close();
  }
});

test('the market page holds the API\'s numbers', async () => {
  const market = await call('GET', '/v1/stats/market?window=7d');
  const series = await call('GET', '/v1/stats/market/series?window=7d&by=task');
  const { page } = await open('/?window=7d');
  assert.equal(await page.textContent('[data-live="calls"]'), market.calls.toLocaleString('en-US'));
  const rows = await page.$$eval('#leaderboard tbody tr', (trs) => trs.map((tr) => tr.dataset.model));
  assert.deepEqual(rows, market.models.slice(0, 20).map((m) => m.model));
  assert.deepEqual(await column(page, '#leaderboard', 3), market.models.slice(0, 20).map((m) => String(m.calls)));
  assert.deepEqual(await column(page, '#leaderboard', 4), market.models.slice(0, 20).map((m) => m.revenue));
  assert.deepEqual((await column(page, '#leaderboard', 2)).map(Number), market.models.slice(0, 20).map((m) => m.share));
  // The stacked chart's table: one column per task, one row per day.
  const layers = series.series.filter((s) => s.calls.some((c) => c > 0));
  for (const [i, layer] of layers.entries()) {
    const cells = await page.$$eval('#demand-by-task tbody tr', (trs, c) => trs.map((tr) => tr.children[c + 1].dataset.value), i);
    assert.deepEqual(cells.map(Number), layer.calls, `the ${layer.key} layer`);
  }
  const bars = await page.$$eval('#demand-by-task rect.bar', (rects) => rects.length);
  assert.equal(bars, layers.reduce((n, l) => n + l.calls.filter((c) => c > 0).length, 0), 'one bar per non-empty cell');
  const lorenz = await page.$$eval('#lorenz tbody tr', (trs) => trs.map((tr) => [...tr.children].map((td) => Number(td.dataset.value))));
  assert.deepEqual(lorenz, market.lorenz);
  await page.close();

  const tasks = await call('GET', '/v1/stats/tasks?window=30d&sort=opportunity');
  const opportunities = (await open('/opportunities')).page;
  assert.deepEqual(await opportunities.$$eval('#tasks tbody tr', (trs) => trs.map((tr) => tr.dataset.task)), tasks.items.map((t) => t.task));
  assert.deepEqual((await column(opportunities, '#tasks', 4)).map(Number), tasks.items.map((t) => t.calls_per_model));
  await opportunities.close();
});

test('a model page charts the API\'s series and its card cannot run a script', async () => {
  const creator = await signup('card-author');
  const card = '# Hostile card\n\n<script>window.pwned = 1</script>\n<img src="/assets/favicon.missing" onerror="window.pwned = 2">\n[click](javascript:window.pwned=3)\n\nA **fine** model.';
  await call('POST', '/v1/models', { key: creator, body: { name: 'carded', task: 'regression', description: card, price_per_inference: '0' } });
  await call('POST', '/v1/models/card-author/carded/versions', { key: creator, body: new Uint8Array(readFileSync(FIXTURE)) });
  for (let i = 0; i < 3; i += 1) await call('POST', '/v1/models/card-author/carded/infer', { key: creator, body: { inputs: LINEAR_INPUT }, headers: { 'X-App': 'tests' } });
  const { page, problems } = await open('/models/card-author/carded?window=24h');
  assert.equal(await page.evaluate(() => window.pwned), undefined);
  assert.equal(await page.locator('.card-text strong').textContent(), 'fine');
  assert.equal(await page.locator('.card-text script, .card-text img[onerror]').count(), 0);
  await page.locator('.card-text a').click({ timeout: 2000 }).catch(() => {});
  assert.equal(await page.evaluate(() => window.pwned), undefined);
  const series = await call('GET', (await page.locator('#calls a.download').getAttribute('href')));
  assert.deepEqual((await page.$$eval('#calls tbody tr', (trs) => trs.map((tr) => Number(tr.children[1].dataset.value)))), series.series.map((p) => p.calls));
  assert.equal(series.series.reduce((n, p) => n + p.calls, 0), 3);
  assert.deepEqual(await column(page, '#apps', 1), ['3']);
  // The card's broken image is the creator's; nothing else failed.
  assert.deepEqual(problems.filter((p) => !p.includes('favicon.missing') && !p.includes('Failed to load resource')), []);
  await page.close();
});

test('the try-it form runs a paid call and the balance drops by the price', async () => {
  const models = await call('GET', '/v1/models?sort=popular&limit=100');
  const paid = models.items.find((m) => m.price_per_inference !== '0' && m.latest_version);
  const key = await signup('tryer', '1000000000000');
  const before = BigInt((await call('GET', '/v1/account', { key })).balance);
  const { page, problems } = await open(`/models/${paid.owner}/${paid.name}`);
  await page.fill('#try-it input[name="key"]', key);
  await page.fill('#try-it input[name="app"]', 'browser-test');
  await page.click('#try-it button[type="submit"]');
  await page.waitForSelector('#try-balance', { timeout: 20000 });
  assert.equal(await page.getAttribute('#try-cost', 'data-value'), paid.price_per_inference);
  const shown = BigInt(await page.getAttribute('#try-balance', 'data-value'));
  assert.equal(shown, before - BigInt(paid.price_per_inference));
  assert.equal(BigInt((await call('GET', '/v1/account', { key })).balance), shown);
  assert.match(await page.textContent('#try-receipt'), /^#\d+$/);
  assert.match(await page.textContent('#try-outputs'), /"dtype"/);
  assert.deepEqual(problems, []);
  await page.close();
});

test('my account shows the API\'s figures, downloads its CSV, and verifies receipts in the browser', async () => {
  // A creator whose model a caller uses: earnings by model and by app, receipts.
  const creator = await signup('earner', '1000000000000');
  const caller = await signup('payer', '1000000000000');
  await call('POST', '/v1/models', { key: creator, body: { name: 'earning', task: 'regression', price_per_inference: '2500000' } });
  await call('POST', '/v1/models/earner/earning/versions', { key: creator, body: new Uint8Array(readFileSync(FIXTURE)) });
  for (const app of ['shop', 'shop', 'lab']) {
    await call('POST', '/v1/models/earner/earning/infer', { key: caller, body: { inputs: LINEAR_INPUT }, headers: { 'X-App': app } });
  }
  // The creator also pays for calls: receipts in their own transfers.
  for (let i = 0; i < 2; i += 1) await call('POST', '/v1/models/earner/earning/infer', { key: creator, body: { inputs: LINEAR_INPUT } });

  const { page, problems } = await open('/account');
  await page.fill('#key-form input[name="key"]', creator);
  await page.click('#key-form button[type="submit"]');
  await page.waitForSelector('#transfers');
  const account = await call('GET', '/v1/account', { key: creator });
  assert.equal(await page.textContent('[data-live="balance"]'), (await page.evaluate((b) => {
    // The page's own formatting of the API's balance.
    const scale = 10n ** BigInt(document.body.dataset.decimals);
    const v = BigInt(b);
    const whole = (v / scale).toString().replace(/\B(?=(\d{3})+(?!\d))/g, ',');
    const fraction = (v % scale).toString().padStart(Number(document.body.dataset.decimals), '0').replace(/0+$/, '');
    return `${fraction ? `${whole}.${fraction}` : whole} ${document.body.dataset.symbol}`;
  }, account.balance)));
  const transfers = await call('GET', '/v1/account/transfers?limit=20', { key: creator });
  assert.deepEqual(await column(page, '#transfers', 4), transfers.items.map((t) => t.amount));
  const earned = await call('GET', '/v1/account/earnings?group_by=app', { key: creator });
  assert.deepEqual(await page.$$eval('.earnings strong', (s) => s.map((e) => e.dataset.value)), [earned.total, earned.total]);

  // The CSV the page downloads is the API's CSV.
  const link = page.locator('a[data-download="earnings-by-app.csv"]');
  const [download] = await Promise.all([page.waitForEvent('download'), link.click()]);
  const downloaded = readFileSync(await download.path(), 'utf8');
  const fromApi = await call('GET', await link.getAttribute('href'), { key: creator, raw: true });
  assert.equal(downloaded, fromApi);
  assert.match(downloaded, /^t,group,calls,earned\n/);
  assert.ok(downloaded.includes(',shop,2,') && downloaded.includes(',lab,1,'), downloaded);

  // Verify: the checkpoint's signature and each receipt's inclusion proof.
  await page.click('#verify-run');
  await page.waitForSelector('#verify-result [data-verified]', { timeout: 30000 });
  const verdict = await page.getAttribute('#verify-result [data-verified]', 'data-verified');
  assert.equal(verdict, 'true', await page.textContent('#verify-result'));
  const receipts = new Set(transfers.items.filter((t) => t.log_index !== null).map((t) => t.log_index));
  assert.equal(receipts.size, 5, 'three calls paid the creator, two the creator paid');
  assert.match(await page.textContent('#verify-result'), new RegExp(`Verified: the checkpoint and ${receipts.size} receipts`));
  assert.deepEqual(problems, []);

  // A tampered proof: the same panel says so.
  await page.route('**/v1/log/proof/inclusion**', async (route) => {
    const response = await route.fetch();
    const proof = await response.json();
    proof.hashes[0] = proof.hashes[0].replace(/^./, (c) => (c === '0' ? '1' : '0'));
    await route.fulfill({ response, json: proof });
  });
  await page.click('#verify-run');
  await page.waitForFunction(() => document.querySelector('#verify-result [data-verified]')?.dataset.verified === 'false', null, { timeout: 30000 });
  assert.match(await page.textContent('#verify-result'), /inclusion proof fails/);
  await page.screenshot({ path: join(ARTIFACTS, 'account-verify-tampered.png'), fullPage: true });
  await page.close();
});

test('the market page shows new calls without a reload', async () => {
  const { page, problems } = await open('/?window=24h');
  const shown = async () => Number((await page.textContent('[data-live="calls"]')).replace(/,/g, ''));
  const before = await shown();
  const key = await signup('live-caller');
  await call('POST', '/v1/models', { key, body: { name: 'live', task: 'other', price_per_inference: '0' } });
  await call('POST', '/v1/models/live-caller/live/versions', { key, body: new Uint8Array(readFileSync(FIXTURE)) });
  for (let i = 0; i < 5; i += 1) await call('POST', '/v1/models/live-caller/live/infer', { key, body: { inputs: LINEAR_INPUT } });
  await page.waitForFunction((n) => Number(document.querySelector('[data-live="calls"]').textContent.replace(/,/g, '')) >= n, before + 5, { timeout: 15000 });
  assert.equal(await shown(), (await call('GET', '/v1/stats/market?window=24h')).calls);
  assert.match(await page.textContent('[data-live="status"]'), /^Live · updated/);
  assert.deepEqual(problems, []);
  await page.close();
});

// ---- A market that pays on a chain -------------------------------------------

test('on a market with a chain: how to pay with a wallet, payouts with their transactions, the reserves', async () => {
  const rpc = process.env.VITRINE_TEST_ANVIL;
  assert.ok(rpc, 'VITRINE_TEST_ANVIL: the URL of a private anvil (scripts/anvil; scripts/browser-tests starts one)');
  const anvil = defineChain({
    id: 31337, name: 'anvil', nativeCurrency: { name: 'Ether', symbol: 'ETH', decimals: 18 }, rpcUrls: { default: { http: [rpc] } },
  });
  const chain = createPublicClient({ chain: anvil, transport: viemHttp(rpc) });
  const funded = async () => {
    const account = privateKeyToAccount(generatePrivateKey());
    await chain.request({ method: 'anvil_setBalance', params: [account.address, '0x56BC75E2D63100000'] });
    return { account, client: createWalletClient({ account, chain: anvil, transport: viemHttp(rpc) }) };
  };
  const mine = (blocks) => chain.request({ method: 'anvil_mine', params: [`0x${blocks.toString(16)}`] });
  const artifact = JSON.parse(readFileSync(join(ROOT, 'fixtures/chain/TestToken.json'), 'utf8'));
  const deployer = await funded();
  const deployed = await deployer.client.deployContract({ abi: artifact.abi, bytecode: artifact.bytecode, args: ['OpenGradient', 'OPG', '2', 18] });
  const token = (await chain.waitForTransactionReceipt({ hash: deployed })).contractAddress;
  const dir = mkdtempSync(join(tmpdir(), 'vitrine-browser-chain-'));
  const marketKey = generatePrivateKey();
  const market = privateKeyToAccount(marketKey).address;
  await chain.request({ method: 'anvil_setBalance', params: [market, '0x56BC75E2D63100000'] });
  const mint = await deployer.client.writeContract({
    address: token, abi: parseAbi(['function mint(address to, uint256 amount)']), functionName: 'mint', args: [market, 10n * 10n ** 18n],
  });
  await chain.waitForTransactionReceipt({ hash: mint });
  await mine(2);
  const keyFile = join(dir, 'market.key');
  execFileSync('sh', ['-c', `umask 077 && printf '%s\\n' ${marketKey} > ${keyFile}`]);
  const setting = `chain={rpc_url = "${rpc}", network = "eip155:31337", token = "${token}", key_file = "${keyFile}", confirmations = 2}`;
  const chainServer = spawn(BINARY, ['serve', '--data-dir', join(dir, 'data'), '--listen', '127.0.0.1:0', '--set', setting], {
    stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, RUST_LOG: 'warn' },
  });
  const mainBase = base;
  try {
    base = await new Promise((resolveUrl, reject) => {
      let seen = '';
      chainServer.stdout.on('data', (chunk) => {
        seen += chunk;
        const match = seen.match(/listening on (http:\/\/\S+)/);
        if (match) resolveUrl(match[1]);
      });
      chainServer.on('exit', (code) => reject(new Error(`the server exited (${code}) before listening`)));
    });
    const dataFiles = execFileSync('ls', [join(dir, 'data')]).toString().split('\n');
    const operator = readFileSync(join(dir, 'data', dataFiles.find((f) => f.includes('operator'))), 'utf8').trim();
    const { api_key: creator } = await call('POST', '/v1/accounts', { body: { name: 'earner' } });
    await call('POST', '/v1/admin/deposits', { key: operator, body: { account: 'earner', amount: '5000000000', reference: 'wire' } });
    // The creator proves a wallet, and is paid out to it.
    const wallet = privateKeyToAccount(generatePrivateKey());
    const { message } = await call('GET', '/v1/account/addresses/challenge', { key: creator });
    const signature = await wallet.signMessage({ message });
    await call('POST', '/v1/account/addresses', { key: creator, body: { address: wallet.address, signature } });
    const payout = await call('POST', '/v1/payouts', { key: creator, body: { amount: '2000000000', address: wallet.address } });
    const until = async (state) => {
      for (let i = 0; i < 150; i += 1) {
        const { items } = await call('GET', '/v1/payouts', { key: creator });
        const found = items.find((p) => p.id === payout.id);
        if (found.state === state) return found;
        if (state === 'final' && found.state === 'mined') await mine(1);
        await new Promise((r) => setTimeout(r, 200));
      }
      throw new Error(`payout ${payout.id} never ${state}`);
    };
    const paid = await until('final');
    await mine(1);
    await call('PUT', '/v1/payouts/automatic', { key: creator, body: { address: wallet.address, threshold: '10000000000' } });

    const { page, problems } = await open('/account');
    await page.fill('#key-form input[name="key"]', creator);
    await page.click('#key-form button[type="submit"]');
    await page.waitForSelector('#wallet');
    assert.match(await page.textContent('#wallet'), /vitrine topup 5 --wallet-key-file/);
    assert.equal((await page.textContent('#market-address')).trim(), market.toLowerCase());
    assert.equal(await page.getAttribute('#payouts [data-transaction]', 'data-transaction'), paid.transaction);
    assert.equal(await page.textContent('#payouts [data-state]'), 'final');
    assert.match(await page.textContent('#automatic-payouts'), /whenever it reaches 10 OPG/);
    await page.screenshot({ path: join(ARTIFACTS, 'account-chain.png'), fullPage: true });
    assert.deepEqual(problems, [], 'the account page on a chain had console errors or failed requests');
    await page.close();

    const log = await open('/log');
    assert.equal(await log.page.getAttribute('#reserves-verdict', 'data-covered'), 'true');
    const reserves = await call('GET', '/v1/chain/reserves');
    assert.equal(reserves.onchain_balance, '8000000000');
    assert.equal(reserves.liabilities, '3000000000');
    assert.match(await log.page.textContent('#reserves'), /to spare/);
    await log.page.screenshot({ path: join(ARTIFACTS, 'log-chain.png'), fullPage: true });
    assert.deepEqual(log.problems, []);
    await log.page.close();
    assert.deepEqual(await seriousViolations('/log'), [], 'accessibility of /log with reserves');

    for (const path of ['/account', '/log']) {
      const phone = await open(path, { width: 390 });
      if (path === '/account') {
        await phone.page.fill('#key-form input[name="key"]', creator);
        await phone.page.click('#key-form button[type="submit"]');
        await phone.page.waitForSelector('#wallet');
      }
      const width = await phone.page.evaluate(() => document.documentElement.scrollWidth);
      assert.ok(width <= 390, `${path} on a chain scrolls sideways at 390 px (${width} px wide)`);
      await phone.page.screenshot({ path: join(ARTIFACTS, `${shortName(path)}-chain-390px.png`), fullPage: true });
      await phone.page.close();
    }
  } finally {
    base = mainBase;
    chainServer.kill('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
  }
});
