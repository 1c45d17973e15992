// A real browser for muster's sign-in tests (test-only code): headless Chromium driven over the Chrome
// DevTools protocol with Node 22's built-in WebSocket, so nothing beyond Debian's `chromium` is needed.
//
//   node browser.mjs CHROMIUM pages URL...
//     Opens each URL in its own tab and prints one JSON line: an array of
//     {"url", "status", "headers", "redirects": [urls], "finalUrl", "title", "text", "active": N}
//     where status/headers are the main document's response as Chromium received it (header names
//     lower-cased), redirects are the 3xx hops Chromium followed, text is the page's visible text
//     (innerText) and active counts what could take a person elsewhere or run code: links, forms,
//     scripts, frames, <meta http-equiv> (a refresh) and <base>.
//
//   node browser.mjs CHROMIUM signin AUTHORIZE_URL USER --until PREFIX
//     Opens AUTHORIZE_URL and signs USER in the way a person would: on the central IdP's login page
//     (oidc-provider's dev interactions) it types USER and a password and submits; on its consent page it
//     presses the button. It stops once the tab has loaded a page whose URL starts with PREFIX (the
//     agent's loopback redirect URI) and prints one JSON line:
//     {"documents": [every document URL requested, redirect hops included], "finalUrl", "text", "steps"}
//     Any other page (an error page of muster's, say) fails with its text.
//
//   node browser.mjs CHROMIUM script PAGE_URL EXPRESSION [--map HOST]
//     Opens PAGE_URL, evaluates EXPRESSION in it (awaiting a promise; as the page's own script, so
//     fetch() is held to CORS) and prints its value as one JSON line. --map HOST makes Chromium resolve
//     HOST to 127.0.0.1, so that a page served on loopback can have another origin.
//
// Chromium runs with a fresh --user-data-dir (removed at exit) and the flags that keep it from reaching
// out to the network (this machine has none, and Chromium hangs waiting on it otherwise); its DevTools
// endpoint listens on 127.0.0.1 only (Chromium's default). Exit status 1 with a message on stderr on failure.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const STEP_MS = 30_000;
const args = process.argv.slice(2);
const pos = [];
const opts = {};
for (let i = 0; i < args.length; i++) {
  if (args[i].startsWith('--')) opts[args[i].slice(2)] = args[++i];
  else pos.push(args[i]);
}
const [CHROMIUM, MODE, ...rest] = pos;
if (!CHROMIUM || !['pages', 'signin', 'script'].includes(MODE)) {
  console.error('usage: browser.mjs CHROMIUM pages URL... | signin URL USER --until PREFIX | script URL EXPRESSION [--map HOST]');
  process.exit(2);
}

const profile = mkdtempSync(join(tmpdir(), 'muster-chromium-'));
const chromium = spawn(CHROMIUM, [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--disable-dev-shm-usage', `--user-data-dir=${profile}`, '--remote-debugging-port=0',
  ...(opts.map ? [`--host-resolver-rules=MAP ${opts.map} 127.0.0.1`] : []), 'about:blank',
], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, TMPDIR: profile } });
let chromiumLog = '';
const exited = new Promise((resolve) => chromium.on('exit', resolve));
const removeProfile = () => {
  try { rmSync(profile, { recursive: true, force: true, maxRetries: 5 }); } catch { /* best effort */ }
};
/** Fails: kills Chromium, removes its profile once it is gone, exits 1. Never resolves. */
const die = (message) => {
  console.error(`browser: ${message}`);
  chromium.kill('SIGKILL');
  setTimeout(() => process.exit(1), 5_000).unref();
  exited.then(() => {
    removeProfile();
    process.exit(1);
  });
  return new Promise(() => {});
};
/** Closes Chromium (killed if it does not go within 5 s) and removes its profile. */
async function cleanup() {
  const kill = setTimeout(() => chromium.kill('SIGKILL'), 5_000);
  send('Browser.close').catch(() => chromium.kill('SIGKILL'));
  await exited;
  clearTimeout(kill);
  removeProfile();
}

let endpointFound = false;
const endpoint = await new Promise((resolve) => {
  const timer = setTimeout(() => die(`Chromium printed no DevTools endpoint in ${STEP_MS} ms: ${chromiumLog}`), STEP_MS);
  chromium.stderr.on('data', (chunk) => {
    chromiumLog = (chromiumLog + chunk).slice(-4000);
    const found = chromiumLog.match(/DevTools listening on (ws:\/\/\S+)/);
    if (found && !endpointFound) {
      endpointFound = true;
      clearTimeout(timer);
      resolve(found[1]);
    }
  });
  exited.then((code) => endpointFound || die(`Chromium exited (${code}) before its DevTools endpoint: ${chromiumLog}`));
});

// ---- a minimal DevTools protocol client ------------------------------------------------------------------
const ws = new WebSocket(endpoint);
await new Promise((resolve, reject) => {
  ws.onopen = resolve;
  ws.onerror = () => reject(new Error('the DevTools WebSocket did not open'));
}).catch((e) => die(e.message));
let nextId = 0;
const pending = new Map();
const listeners = new Set();
ws.onmessage = (event) => {
  const message = JSON.parse(event.data);
  if (message.id !== undefined && pending.has(message.id)) {
    const { resolve, reject } = pending.get(message.id);
    pending.delete(message.id);
    if (message.error) reject(new Error(`${JSON.stringify(message.error)}`));
    else resolve(message.result);
  } else {
    for (const listener of listeners) listener(message);
  }
};
const send = (method, params = {}, sessionId) => new Promise((resolve, reject) => {
  const id = ++nextId;
  pending.set(id, { resolve, reject });
  ws.send(JSON.stringify({ id, method, params, ...(sessionId ? { sessionId } : {}) }));
});

/** A new tab: its session, and a queue of its main-frame load events. */
async function tab() {
  const { targetId } = await send('Target.createTarget', { url: 'about:blank' });
  const { sessionId } = await send('Target.attachToTarget', { targetId, flatten: true });
  const state = { sessionId, documents: [], responses: [], loads: [], waiting: null };
  listeners.add((m) => {
    if (m.sessionId !== sessionId) return;
    if (m.method === 'Network.requestWillBeSent' && m.params.type === 'Document') {
      state.documents.push({ url: m.params.request.url, redirectedFrom: m.params.redirectResponse?.url });
    } else if (m.method === 'Network.responseReceived' && m.params.type === 'Document') {
      state.responses.push(m.params.response);
    } else if (m.method === 'Page.loadEventFired') {
      state.loads.push(m.params);
      if (state.waiting) state.waiting();
    }
  });
  await send('Page.enable', {}, sessionId);
  await send('Network.enable', {}, sessionId);
  await send('Network.setCacheDisabled', { cacheDisabled: true }, sessionId);
  return state;
}

/** Waits for the tab's next page load (one already fired and not consumed counts). */
async function loaded(state, what) {
  if (!state.loads.length) {
    await new Promise((resolve) => {
      const timer = setTimeout(() => die(`no page loaded within ${STEP_MS} ms (${what})`), STEP_MS);
      state.waiting = () => {
        clearTimeout(timer);
        state.waiting = null;
        resolve();
      };
    });
  }
  state.loads.shift();
}

async function evaluate(state, expression) {
  const { result, exceptionDetails } = await send(
    'Runtime.evaluate', { expression, returnByValue: true, awaitPromise: true }, state.sessionId,
  );
  if (exceptionDetails) await die(`script failed in the page: ${JSON.stringify(exceptionDetails).slice(0, 400)}`);
  return result.value;
}

const PAGE = `JSON.stringify({
  url: location.href,
  title: document.title,
  text: document.body ? document.body.innerText : '',
  active: document.querySelectorAll('a[href], form, script, iframe, frame, object, embed, meta[http-equiv], base').length,
  login: !!document.querySelector('input[name=login]'),
  form: !!document.querySelector('form'),
})`;

async function navigate(state, url) {
  state.loads.length = 0; // the blank tab's own load, should it have come late, is not this page's
  const { errorText } = await send('Page.navigate', { url }, state.sessionId);
  if (errorText) await die(`Chromium could not open ${url}: ${errorText}`);
  await loaded(state, url);
}

// ---- modes ------------------------------------------------------------------------------------------------
if (MODE === 'pages') {
  const out = [];
  for (const url of rest) {
    const state = await tab();
    await navigate(state, url);
    const page = JSON.parse(await evaluate(state, PAGE));
    const response = state.responses.at(-1) ?? {};
    const headers = Object.fromEntries(Object.entries(response.headers ?? {}).map(([k, v]) => [k.toLowerCase(), v]));
    out.push({
      url,
      status: response.status,
      headers,
      redirects: state.documents.filter((d) => d.redirectedFrom).map((d) => d.url),
      finalUrl: page.url,
      title: page.title,
      text: page.text,
      active: page.active,
    });
  }
  console.log(JSON.stringify(out));
} else if (MODE === 'script') {
  const [url, expression] = rest;
  const state = await tab();
  await navigate(state, url);
  console.log(JSON.stringify(await evaluate(state, expression)));
} else {
  const [url, user] = rest;
  const until = opts.until;
  if (!url || !user || !until) await die('signin needs AUTHORIZE_URL USER --until PREFIX');
  const state = await tab();
  await navigate(state, url);
  const steps = [];
  for (let step = 0; ; step++) {
    if (step > 10) await die(`still not at ${until} after ${steps.join(' -> ')}`);
    const page = JSON.parse(await evaluate(state, PAGE));
    steps.push(new URL(page.url).pathname);
    if (page.url.startsWith(until)) {
      console.log(JSON.stringify({
        documents: state.documents.map((d) => d.url), finalUrl: page.url, text: page.text, steps,
      }));
      break;
    }
    if (page.login) {
      // The IdP's login form: type like a person, then press its submit button.
      await evaluate(state, `(() => {
        const set = (name, value) => {
          const input = document.querySelector('input[name=' + name + ']');
          input.focus(); input.value = value;
          input.dispatchEvent(new Event('input', { bubbles: true }));
        };
        set('login', ${JSON.stringify(user)});
        if (document.querySelector('input[name=password]')) set('password', 'any password');
        document.querySelector('form button[type=submit], form [type=submit], form button').click();
      })()`);
    } else if (page.form) {
      // The IdP's consent page: press its button.
      await evaluate(state, `document.querySelector('form button[type=submit], form [type=submit], form button').click()`);
    } else {
      await die(`stuck on ${page.url} (${page.title}): ${page.text.slice(0, 400)}`);
    }
    await loaded(state, `after submitting the form on ${page.url}`);
  }
}
await cleanup();
process.exit(0);
