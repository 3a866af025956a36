// Vitrine's dashboard script. The pages are complete without it; it adds
// what needs the visitor's key (kept in this tab's session storage only) or
// the browser's own cryptography: the account panel, the try-it form, the
// verify panel, and live figures on the market page.
'use strict';

const KEY_STORAGE = 'vitrine-api-key';
const LIVE_INTERVAL_MS = 3000;

const token = {
  symbol: document.body.dataset.symbol || 'OPG',
  decimals: BigInt(document.body.dataset.decimals || '9'),
};

/** Minor units (a decimal string) as tokens, exactly, as the server prints them. */
function amount(minor, withSymbol = true) {
  let value;
  try { value = BigInt(minor); } catch { return String(minor); }
  const scale = 10n ** token.decimals;
  const whole = (value / scale).toString().replace(/\B(?=(\d{3})+(?!\d))/g, ',');
  const fraction = (value % scale).toString().padStart(Number(token.decimals), '0').replace(/0+$/, '');
  const number = fraction ? `${whole}.${fraction}` : whole;
  return withSymbol ? `${number} ${token.symbol}` : number;
}

function count(n) { return Number(n).toLocaleString('en-US'); }

function storedKey() { return sessionStorage.getItem(KEY_STORAGE) || ''; }

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  const key = options.key === undefined ? storedKey() : options.key;
  if (key) headers.Authorization = `Bearer ${key}`;
  const response = await fetch(path, Object.assign({}, options, { headers }));
  if (!response.ok) {
    let message = `${response.status}`;
    try { const body = await response.json(); message = `${body.error.code}: ${body.error.message}`; } catch { /* not JSON */ }
    throw new Error(message);
  }
  return response;
}

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  for (const child of children) node.append(child);
  return node;
}

// ---- Live figures on the market page --------------------------------------

function startLiveMarket(section) {
  const period = section.dataset.liveMarket;
  const status = section.querySelector('[data-live="status"]');
  const render = {
    calls: (v) => count(v.calls),
    revenue: (v) => amount(v.revenue),
    active_models: (v) => count(v.active_models),
    active_creators: (v) => count(v.active_creators),
    unique_callers: (v) => count(v.unique_callers),
  };
  async function refresh() {
    try {
      const view = await (await api(`/v1/stats/market?window=${encodeURIComponent(period)}`, { key: '' })).json();
      for (const [name, format] of Object.entries(render)) {
        const target = section.querySelector(`[data-live="${name}"]`);
        const text = format(view);
        if (target && target.textContent !== text) target.textContent = text;
      }
      status.textContent = `Live · updated ${new Date().toLocaleTimeString('en-GB')}`;
    } catch (error) {
      status.textContent = `Live updates paused: ${error.message}`;
    }
  }
  setInterval(refresh, LIVE_INTERVAL_MS);
}

// ---- Downloads that need the key ---------------------------------------------

async function download(link) {
  const response = await api(link.getAttribute('href'));
  const blob = await response.blob();
  const url = URL.createObjectURL(blob);
  const save = element('a', { href: url, download: link.dataset.download });
  document.body.append(save);
  save.click();
  save.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

// ---- My account ------------------------------------------------------------

function startAccount() {
  const form = document.getElementById('key-form');
  const panel = document.getElementById('account-panel');
  const verifyButton = document.getElementById('verify-run');
  const params = new URLSearchParams(location.search);
  let period = params.get('window') || '30d';

  async function load() {
    if (!storedKey()) {
      panel.replaceChildren(element('p', { class: 'notice' }, 'Type your API key above to see your account.'));
      verifyButton.disabled = true;
      return;
    }
    panel.setAttribute('aria-busy', 'true');
    try {
      const response = await fetch(`/account/panel?window=${encodeURIComponent(period)}`, {
        headers: { Authorization: `Bearer ${storedKey()}` },
      });
      // The fragment is this server's own HTML, escaped where it was made.
      panel.innerHTML = await response.text();
      verifyButton.disabled = !response.ok;
    } catch (error) {
      panel.replaceChildren(element('p', { class: 'notice' }, `Could not load the account: ${error.message}`));
    } finally {
      panel.removeAttribute('aria-busy');
    }
  }

  form.key.value = storedKey();
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY_STORAGE, form.key.value.trim());
    load();
  });
  document.getElementById('forget').addEventListener('click', () => {
    sessionStorage.removeItem(KEY_STORAGE);
    form.key.value = '';
    load();
  });
  panel.addEventListener('click', (event) => {
    const link = event.target.closest('a');
    if (!link) return;
    if (link.dataset.download) {
      event.preventDefault();
      download(link).catch((error) => alert(`Download failed: ${error.message}`));
    } else if (link.closest('.windows')) {
      event.preventDefault();
      period = new URL(link.href).searchParams.get('window');
      history.replaceState(null, '', link.href);
      load();
    }
  });
  verifyButton.addEventListener('click', () => verifyReceipts(panel));
  load();
}

// ---- Verify, in the browser ------------------------------------------------

const encoder = new TextEncoder();

function fromBase64(text) { return Uint8Array.from(atob(text), (c) => c.charCodeAt(0)); }
function fromHex(text) { return Uint8Array.from(text.match(/../g) || [], (h) => parseInt(h, 16)); }
function toHex(bytes) { return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join(''); }
function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const part of parts) { out.set(part, offset); offset += part.length; }
  return out;
}
async function sha256(bytes) { return new Uint8Array(await crypto.subtle.digest('SHA-256', bytes)); }
function equal(a, b) { return a.length === b.length && a.every((x, i) => x === b[i]); }

async function ed25519Verify(publicKey, signature, message) {
  const key = await crypto.subtle.importKey('raw', publicKey, { name: 'Ed25519' }, false, ['verify']);
  return crypto.subtle.verify({ name: 'Ed25519' }, key, signature, message);
}

/** A C2SP signed note: checks the log's signature; returns the checkpoint. */
async function verifyCheckpoint(note, name, publicKey) {
  const split = note.indexOf('\n\n');
  if (split < 0) throw new Error('the checkpoint is not a signed note');
  const text = note.slice(0, split + 1);
  // C2SP signed-note key id: SHA-256(name || "\n" || 0x01 || key)[:4].
  const keyId = (await sha256(concat(encoder.encode(`${name}\n`), Uint8Array.of(1), publicKey))).slice(0, 4);
  let verified = false;
  for (const line of note.slice(split + 2).split('\n')) {
    const match = line.match(/^\u2014 (\S+) (\S+)$/);
    if (!match || match[1] !== name) continue;
    const blob = fromBase64(match[2]);
    if (blob.length !== 68 || !equal(blob.slice(0, 4), keyId)) continue;
    if (await ed25519Verify(publicKey, blob.slice(4), encoder.encode(text))) verified = true;
  }
  if (!verified) throw new Error('the checkpoint signature does not verify against the log key');
  const [origin, size, root] = text.split('\n');
  return { origin, size: Number(size), root: fromBase64(root) };
}

/** RFC 9162 §2.1.3.2: the root an inclusion proof leads to equals `root`. */
async function verifyInclusion(index, size, leafHash, proof, root) {
  if (index >= size) return false;
  let fn = index;
  let sn = size - 1;
  let r = leafHash;
  for (const p of proof) {
    if (sn === 0) return false;
    if (fn % 2 === 1 || fn === sn) {
      r = await sha256(concat(Uint8Array.of(1), p, r));
      if (fn % 2 === 0) {
        while (fn % 2 === 0 && fn !== 0) { fn = Math.floor(fn / 2); sn = Math.floor(sn / 2); }
      }
    } else {
      r = await sha256(concat(Uint8Array.of(1), r, p));
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  return sn === 0 && equal(r, root);
}

async function verifyReceipts(panel) {
  const result = document.getElementById('verify-result');
  const lines = element('ul');
  const say = (ok, text) => lines.append(element('li', { class: ok ? 'ok' : 'failed' }, `${ok ? '✓' : '✗'} ${text}`));
  result.replaceChildren(element('p', {}, 'Verifying…'), lines);
  let failures = 0;
  try {
    const keys = await (await api('/v1/log/key', { key: '' })).json();
    const note = await (await api('/v1/log/checkpoint', { key: '' })).text();
    const checkpoint = await verifyCheckpoint(note, keys.name, fromBase64(keys.public_key));
    say(true, `Checkpoint of ${count(checkpoint.size)} leaves: signed by the log key ${keys.vkey}`);
    const indices = [...new Set([...panel.querySelectorAll('[data-log-index]')].map((a) => Number(a.dataset.logIndex)))]
      .filter((i) => i < checkpoint.size);
    for (const index of indices) {
      const receipt = await (await api(`/v1/receipts/${index}`, { key: '' })).json();
      const leaf = fromBase64(receipt.leaf);
      const leafHash = await sha256(concat(Uint8Array.of(0), leaf));
      const proof = await (await api(`/v1/log/proof/inclusion?index=${index}&size=${checkpoint.size}`, { key: '' })).json();
      const included = await verifyInclusion(index, checkpoint.size, leafHash, proof.hashes.map(fromHex), checkpoint.root);
      const nodeKey = keys.node_keys && keys.node_keys[receipt.node];
      const signed = nodeKey ? await ed25519Verify(fromBase64(nodeKey), fromBase64(receipt.signature), leaf) : false;
      const hashMatches = toHex(leafHash) === receipt.leaf_hash;
      const ok = included && signed && hashMatches;
      if (!ok) failures += 1;
      const problems = [!hashMatches && 'leaf hash differs', !included && 'inclusion proof fails', !signed && 'node signature fails']
        .filter(Boolean).join(', ');
      say(ok, `Receipt #${index} (${receipt.model}, ${amount(receipt.price)}): ${ok ? 'signed by node ' + receipt.node + ', included in the checkpoint' : problems}`);
    }
    const summary = failures === 0
      ? `Verified: the checkpoint and ${indices.length} receipt${indices.length === 1 ? '' : 's'}.`
      : `Verification failed for ${failures} of ${indices.length} receipts.`;
    result.firstChild.replaceWith(element('p', { class: failures === 0 ? 'ok' : 'failed', 'data-verified': String(failures === 0) }, summary));
  } catch (error) {
    result.firstChild.replaceWith(element('p', { class: 'failed', 'data-verified': 'false' }, `Verification failed: ${error.message}`));
  }
}

// ---- Try it ----------------------------------------------------------------

/** The API's inputs from the form: each input's shape (its named
 * dimensions from their size boxes) and its numbers, counted against it. */
function tensorsOf(form) {
  const inputs = {};
  for (const set of form.querySelectorAll('fieldset.tensor')) {
    const name = set.dataset.input;
    const dtype = set.dataset.dtype;
    const shape = JSON.parse(set.dataset.shape).map((dim, axis) => {
      if (typeof dim === 'number') return dim;
      const size = Number(form.elements[`dim:${name}:${axis}`].value);
      if (!Number.isInteger(size) || size < 1) throw new Error(`The size of ${dim} in ${name} is a whole number from 1.`);
      return size;
    });
    const words = form.elements[`values:${name}`].value.split(/[\s,\[\]]+/).filter((w) => w !== '');
    const expected = shape.reduce((n, d) => n * d, 1);
    if (words.length !== expected) {
      throw new Error(`${name} takes ${expected} values (shape [${shape.join(', ')}]); ${words.length} given.`);
    }
    const data = words.map((word) => {
      if (dtype === 'bool') {
        if (word !== 'true' && word !== 'false') throw new Error(`${name} takes true or false, not "${word}".`);
        return word === 'true';
      }
      if (['NaN', 'Infinity', '-Infinity'].includes(word)) return word;
      const value = Number(word);
      if (Number.isNaN(value)) throw new Error(`${name}: "${word}" is not a number.`);
      if (!dtype.startsWith('f') && dtype !== 'bf16' && !Number.isInteger(value)) throw new Error(`${name} takes whole numbers (${dtype}), not ${word}.`);
      return value;
    });
    inputs[name] = { dtype, shape, data };
  }
  return inputs;
}

function startTryIt(form) {
  const result = document.getElementById('try-result');
  form.key.value = storedKey();
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const key = form.key.value.trim();
    sessionStorage.setItem(KEY_STORAGE, key);
    let inputs;
    try {
      inputs = tensorsOf(form);
    } catch (error) {
      result.replaceChildren(element('p', { class: 'failed' }, error.message));
      return;
    }
    const headers = { 'Content-Type': 'application/json', 'Idempotency-Key': crypto.randomUUID() };
    if (form.app.value.trim()) headers['X-App'] = form.app.value.trim();
    result.replaceChildren(element('p', {}, 'Running…'));
    try {
      const path = `/v1/models/${form.dataset.model}/versions/${form.dataset.version}/infer`;
      const answer = await (await api(path, { method: 'POST', key, headers, body: JSON.stringify({ inputs }) })).json();
      const account = await (await api('/v1/account', { key })).json();
      const facts = element('dl', { class: 'facts' });
      const fact = (label, value, attributes = {}) => facts.append(element('div', {}, element('dt', {}, label), element('dd', attributes, value)));
      fact('Cost', amount(answer.price), { 'data-value': answer.price, id: 'try-cost' });
      fact('Latency', `${answer.latency_ms} ms`);
      fact('Balance now', amount(account.balance), { 'data-value': account.balance, id: 'try-balance' });
      if (answer.receipt) {
        const link = element('a', { href: `/log?receipt=${answer.receipt.log_index}` }, `#${answer.receipt.log_index}`);
        fact('Receipt', link, { id: 'try-receipt' });
      }
      result.replaceChildren(
        element('p', { class: 'ok' }, 'Done.'),
        facts,
        element('h3', {}, 'Outputs'),
        element('pre', { id: 'try-outputs' }, JSON.stringify(answer.outputs, null, 1)),
        ...(answer.receipt ? [element('details', {}, element('summary', {}, 'Receipt'), element('pre', {}, JSON.stringify(answer.receipt, null, 1)))] : []),
      );
    } catch (error) {
      result.replaceChildren(element('p', { class: 'failed' }, `The call failed: ${error.message}`));
    }
  });
}

// ---- Start -----------------------------------------------------------------

const live = document.querySelector('[data-live-market]');
if (live) startLiveMarket(live);
if (document.getElementById('account-panel')) startAccount();
const tryIt = document.getElementById('try-it');
if (tryIt) startTryIt(tryIt);
