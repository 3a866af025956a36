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
    // Every column header says what it holds.
    assert.deepEqual(await page.$$eval('th[scope="col"]:not([title])', (ths) => ths.map((th) => th.textContent)), [], `${path}: headers without a tooltip`);
    assert.deepEqual(problems, [], `${path} had console errors or failed requests`);
    await page.close();
    assert.deepEqual(await seriousViolations(path), [], `accessibility of ${path}`);

    const phone = await open(path, { width: 390 });
    const width = await phone.page.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(width <= 390, `${path} scrolls sideways at 390 px (${width} px wide)`);
    await phone.page.screenshot({ path: join(ARTIFACTS, `${shortName(path)}-390px.png`), fullPage: true });
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
  // No line before the model's first call: those hours read "–", the rest the API's calls.
  const first = series.series.findIndex((p) => p.calls > 0);
  assert.deepEqual((await page.$$eval('#calls tbody tr', (trs) => trs.map((tr) => tr.children[1].dataset.value ?? null))),
    series.series.map((p, i) => (i < first ? null : String(p.calls))));
  assert.equal(series.series.reduce((n, p) => n + p.calls, 0), 3);
  assert.deepEqual(await column(page, '#apps', 1), ['3']);
  // The card's broken image is the creator's; nothing else failed.
  assert.deepEqual(problems.filter((p) => !p.includes('favicon.missing') && !p.includes('Failed to load resource')), []);
  await page.close();
});

test('one growth figure, partial periods marked, the share of demand, plain words, and whole columns on a phone', async () => {
  // Every change shown reads "new", "±0%", a signed percentage of at most 1,000, or "×N".
  for (const path of ['/?window=24h', '/?window=7d', '/?window=30d', '/opportunities?window=30d', '/opportunities?window=7d']) {
    const { page } = await open(path);
    const changes = await page.$$eval('.change', (spans) => spans.map((s) => s.textContent.trim()));
    assert.ok(changes.length > 0, path);
    for (const text of changes) {
      assert.match(text, /^(new|±0%|[+−]\d+\.\d%|×[\d,]+)$/, `${path}: "${text}"`);
      if (text.endsWith('%') && text !== '±0%') assert.ok(Number(text.slice(1, -1)) <= 1000, `${path}: ${text} is past ×11`);
    }
    await page.close();
  }
  // The leaderboard's change is this window against the window before, as the API counts them.
  const trending = await call('GET', '/v1/stats/trending?window=7d');
  const { page } = await open('/?window=7d');
  for (const item of trending.items.slice(0, 10)) {
    const cell = await page.$eval(`#leaderboard tr[data-model="${item.model}"] td.change-col .change`, (s) => s.textContent).catch(() => null);
    if (cell === null) continue;
    if (item.previous_calls === 0) assert.equal(cell, 'new', item.model);
    else if (Math.abs(item.calls - item.previous_calls) / item.previous_calls < 0.0005) assert.equal(cell, '±0%', item.model);
    else if (item.calls > item.previous_calls * 11) assert.match(cell, /^×/, item.model);
    else assert.equal(cell.slice(0, -1), `${item.calls >= item.previous_calls ? '+' : '−'}${(Math.abs(item.calls - item.previous_calls) / item.previous_calls * 100).toFixed(1)}`, item.model);
  }

  // Today is still running: its bars are marked, its row says so, a note explains.
  const series = await call('GET', '/v1/stats/market/series?window=7d&by=task');
  const last = series.buckets.length - 1;
  const layersToday = series.series.concat([series.other]).filter((s) => s.calls[last] > 0).length;
  assert.equal(await page.locator('#demand-by-task rect.bar.partial').count(), layersToday);
  assert.match(await page.locator('#demand-by-task tbody tr').last().locator('th').textContent(), /\(so far\)$/);
  assert.match(await page.locator('#demand-by-task .partial-note').textContent(), /still running/);

  // The share of demand: each model's share of each day's calls, as the API's series say.
  const shares = await call('GET', await page.locator('#share-of-demand a.download').getAttribute('href'));
  const rows = await page.$$eval('#share-of-demand tbody tr', (trs) => trs.map((tr) => [...tr.children].slice(1).map((td) => td.dataset.value ?? null)));
  const layers = shares.series.concat(shares.other.calls.some((c) => c > 0) ? [shares.other] : []);
  shares.buckets.forEach((_, b) => {
    const total = shares.total.calls[b];
    layers.forEach((layer, l) => {
      const shown = rows[b][l];
      if (total === 0) assert.equal(shown, null);
      else assert.ok(Math.abs(Number(shown) - layer.calls[b] / total) < 1e-12, `bucket ${b}, ${layer.key}`);
    });
  });
  // Stacked to 100 %: every day with calls sums to one.
  rows.forEach((row, b) => {
    if (shares.total.calls[b] > 0) assert.ok(Math.abs(row.reduce((n, v) => n + Number(v ?? 0), 0) - 1) < 1e-9, `bucket ${b}`);
  });
  // Tasks keep their colours whatever the window.
  const colourOf = async (p) => {
    const other = await open(p);
    const keys = await other.page.$$eval('#demand-by-task .legend li', (lis) => Object.fromEntries(lis.map((li) => [li.textContent.trim(), li.querySelector('.key').className])));
    await other.page.close();
    return keys;
  };
  const [day, month] = [await colourOf('/?window=24h'), await colourOf('/?window=30d')];
  for (const task of Object.keys(day)) if (month[task]) assert.equal(day[task], month[task], task);
  // The share chart by task: each task in the colour it has in the calls chart; a wrong choice is a 400 page.
  const byTask = (await open('/?window=7d&share=task')).page;
  const keyOf = (selector) => byTask.$$eval(`${selector} .legend li`, (lis) => Object.fromEntries(lis.map((li) => [li.textContent.trim(), li.querySelector('.key').className])));
  const [shareKeys, callKeys] = [await keyOf('#share-of-demand'), await keyOf('#demand-by-task')];
  assert.ok(Object.keys(shareKeys).length > 1);
  for (const task of Object.keys(shareKeys)) if (callKeys[task]) assert.equal(shareKeys[task], callKeys[task], task);
  await byTask.close();
  const wrong = await open('/?share=bogus');
  assert.equal(wrong.response.status(), 400);
  await wrong.page.close();
  // Plain words: a meaning beside each concentration figure; every leaderboard header explains itself.
  assert.equal(await page.locator('#concentration-title ~ dl dd.meaning').count(), 3);
  assert.deepEqual(await page.$$eval('#leaderboard th', (ths) => ths.filter((th) => !th.title).map((th) => th.textContent)), []);
  await page.close();

  // No axis title overlaps its tick labels, on any chart of the market or a model's page.
  const top = (await call('GET', '/v1/models?sort=popular&limit=1')).items[0];
  for (const path of ['/?window=7d', '/?window=24h', '/?window=30d', `/models/${top.owner}/${top.name}`, `/creators/${top.owner}`, '/opportunities']) {
    const chartPage = (await open(path)).page;
    const clashes = await chartPage.$$eval('figure.chart svg', (svgs) => svgs.flatMap((svg) => {
      const box = (e) => e.getBoundingClientRect();
      const tickElements = [...svg.querySelectorAll('text.tick')];
      const ticks = tickElements.map(box);
      const apart = (a, t) => !(a.left < t.right - 0.5 && t.left < a.right - 0.5 && a.top < t.bottom - 0.5 && t.top < a.bottom - 0.5);
      const frame = box(svg);
      const id = svg.closest('figure').id;
      return [
        ...[...svg.querySelectorAll('text.axis')].map(box).flatMap((a) => ticks.filter((t) => !apart(a, t)).map(() => `${id}: an axis title over a tick`)),
        // Slanted category labels are parallel (their upright boxes overlap, their letters do not).
        ...ticks.filter((_, i) => !tickElements[i].hasAttribute('transform')).flatMap((t, i, upright) => upright.slice(i + 1).filter((u) => !apart(t, u)).map(() => `${id}: two ticks overlap`)),
        ...ticks.filter((t) => t.left < frame.left - 0.5 || t.right > frame.right + 0.5).map(() => `${id}: a tick past the chart's edge`),
      ];
    }));
    assert.deepEqual(clashes, [], `${path}: axis titles over tick labels`);
    await chartPage.close();
  }

  // At 390 px the leaderboard keeps model, share, calls, revenue and change whole, with no sideways scroll.
  const phone = (await open('/?window=7d', { width: 390 })).page;
  const fit = await phone.$eval('#leaderboard', (table) => ({
    table: table.getBoundingClientRect().right,
    wrap: table.parentElement.scrollWidth - table.parentElement.clientWidth,
    cut: [...table.querySelectorAll('td, th')].filter((c) => getComputedStyle(c).display !== 'none' && c.scrollWidth > c.clientWidth + 1).map((c) => c.textContent),
  }));
  assert.ok(fit.table <= 390 && fit.wrap <= 0, `the leaderboard is cut at 390 px: ${JSON.stringify(fit)}`);
  assert.deepEqual(fit.cut, []);
  await phone.screenshot({ path: join(ARTIFACTS, 'market-leaderboard-390px.png'), fullPage: true });
  await phone.close();
});

test('a free model reads "Free", has no revenue chart, and its figures fill whole rows; a model page shows how to call it', async () => {
  const models = await call('GET', '/v1/models?limit=100');
  const free = models.items.find((m) => m.price_per_inference === '0' && m.latest_version);
  const paid = models.items.find((m) => m.price_per_inference !== '0' && m.latest_version);
  for (const [model, isFree] of [[free, true], [paid, false]]) {
    const { page } = await open(`/models/${model.owner}/${model.name}`);
    assert.equal(await page.locator('#revenue').count(), isFree ? 0 : 1);
    const figures = await page.locator('dl.headline .figure').count();
    const columns = await page.$eval('dl.headline', (dl) => getComputedStyle(dl).gridTemplateColumns.split(' ').length);
    assert.equal(figures % columns, 0, `${figures} figures in ${columns} columns`);
    const price = await page.locator('dl.headline .figure').first().locator('.value').textContent();
    assert.ok(isFree ? price === 'Free' : price.endsWith(' per call'), price);
    const snippets = await page.locator('.snippets pre').allTextContents();
    assert.equal(snippets.length, 3);
    assert.ok(snippets[0].startsWith(`vitrine infer ${model.owner}/${model.name} --input`), snippets[0]);
    assert.ok(snippets[1].includes(`/v1/models/${model.owner}/${model.name}/infer`), snippets[1]);
    const [version] = (await call('GET', `/v1/models/${model.owner}/${model.name}/versions`)).items.slice(-1);
    for (const spec of version.inputs) assert.ok(await page.locator('#use-title ~ div code', { hasText: `${spec.name}: ${spec.dtype}` }).count() > 0, spec.name);
    if (isFree) assert.match(await page.locator('.try-it p').first().textContent(), /free/);
    await page.close();
  }
  // The catalogue says "Free" and "per call".
  const catalogue = (await open('/catalogue?sort=price')).page;
  const prices = await catalogue.$$eval('li.card dl.facts dd[data-value]', (dds) => dds.filter((dd) => dd.previousElementSibling?.textContent === 'Price').map((dd) => [dd.dataset.value, dd.textContent]));
  assert.ok(prices.length > 0);
  for (const [minor, text] of prices) assert.ok(minor === '0' ? text === 'Free' : text.endsWith(' per call'), `${minor}: ${text}`);
  assert.ok(await catalogue.locator('li.card .card-signature').count() > 0, 'cards show the signature');
  await catalogue.close();
  // A creator's page stacks its calls by model; the shares of its calls sum to one each day.
  const creator = await call('GET', `/v1/stats/creators/${paid.owner}?window=30d`);
  const creatorPage = (await open(`/creators/${paid.owner}`)).page;
  const stacked = await creatorPage.$$eval('#creator-calls tbody tr', (trs) => trs.map((tr) => [...tr.children].slice(1).reduce((n, td) => n + Number(td.dataset.value ?? 0), 0)));
  assert.deepEqual(stacked, creator.series.map((p) => p.calls));
  const shareRows = await creatorPage.$$eval('#creator-model-share tbody tr', (trs) => trs.map((tr) => [...tr.children].slice(1).reduce((n, td) => n + Number(td.dataset.value ?? 0), 0)));
  shareRows.forEach((sum, i) => assert.ok(creator.series[i].calls === 0 ? sum === 0 : Math.abs(sum - 1) < 1e-9, `day ${i}: ${sum}`));
  await creatorPage.close();
  // A typo finds what was meant, and says so.
  const typo = (await open('/catalogue?q=segmentaion')).page;
  assert.match(await typo.locator('#corrected').textContent(), /segmentaion.*segmentation/);
  const found = await typo.$$eval('li.card', (cards) => cards.map((c) => c.dataset.model));
  assert.ok(found.length > 0 && found.every((m) => m.includes('segmentation')), found.join(' '));
  await typo.close();
});

test('the try-it form runs a paid call and the balance drops by the price', async () => {
  const models = await call('GET', '/v1/models?sort=popular&limit=100');
  const paid = models.items.find((m) => m.price_per_inference !== '0' && m.latest_version);
  const key = await signup('tryer', '1000000000000');
  const before = BigInt((await call('GET', '/v1/account', { key })).balance);
  const { page, problems } = await open(`/models/${paid.owner}/${paid.name}`);
  await page.fill('#try-it input[name="key"]', key);
  await page.fill('#try-it input[name="app"]', 'browser-test');
  // The form is built from the signature: too few numbers are refused, in words, before any call.
  const box = page.locator('#try-it textarea[name^="values:"]').first();
  const zeros = await box.inputValue();
  await box.fill('1, 2');
  await page.click('#try-it button[type="submit"]');
  assert.match(await page.locator('#try-result .failed').textContent(), /takes \d+ values \(shape \[[\d, ]+\]\); 2 given/);
  assert.equal(BigInt((await call('GET', '/v1/account', { key })).balance), before, 'nothing was paid');
  await box.fill(zeros);
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

  // The caller's account shows what it spent, by model and app, as the API counts it.
  const mine = (await open('/account')).page;
  await mine.fill('#key-form input[name="key"]', key);
  await mine.click('#key-form button[type="submit"]');
  await mine.waitForSelector('#transfers');
  const spent = await call('GET', '/v1/account/spending?group_by=app', { key });
  assert.notEqual(spent.total, '0');
  assert.deepEqual(await mine.$$eval('.spending strong', (s) => s.map((e) => e.dataset.value)), [spent.total, spent.total]);
  assert.deepEqual(await mine.$$eval('#spending-by-app .legend li', (lis) => lis.map((li) => li.textContent.trim())), ['browser-test']);
  assert.equal(await mine.locator('#earnings-title').count(), 0, 'a caller without models sees no earnings');
  assert.equal(await mine.locator('#payouts-title').count(), 0, 'nor payouts');
  assert.deepEqual(await mine.$$eval('th[scope="col"]:not([title])', (ths) => ths.map((th) => th.textContent)), [], 'headers without a tooltip');
  // The balance after each transfer: the balance now after the newest, the deposit alone after the oldest.
  const afters = await mine.$$eval('#transfers td.balance-after', (tds) => tds.map((td) => td.dataset.value));
  assert.equal(afters[0], (await call('GET', '/v1/account', { key })).balance);
  assert.equal(afters.at(-1), '1000000000000');
  assert.equal(afters.length, (await call('GET', '/v1/account/transfers?limit=20', { key })).items.length);
  await mine.screenshot({ path: join(ARTIFACTS, 'account-caller.png'), fullPage: true });
  await mine.setViewportSize({ width: 390, height: 900 });
  assert.ok(await mine.evaluate(() => document.documentElement.scrollWidth) <= 390, 'the account fits a phone');
  await mine.screenshot({ path: join(ARTIFACTS, 'account-caller-390px.png'), fullPage: true });
  await mine.close();
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
