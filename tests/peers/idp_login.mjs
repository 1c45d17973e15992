// Headless browser stand-in for the central OP of tests/peers/idp.mjs (test-only code). Node 22.
//
//   node idp_login.mjs CENTRAL_ISSUER USER [--client muster] [--secret S] [--redirect URI] [--scope "..."]
//     Runs authorization code + PKCE (S256) through the dev login + consent forms, follows redirects by hand and
//     takes the code from the Location header pointing at the redirect URI (default
//     http://127.0.0.1:8765/callback, never contacted: no listener needed), redeems it and prints one JSON line:
//     {"id_token":..,"access_token":..,"refresh_token":..,"expires_in":..,"token_type":..,"scope":..}
//     --secret S: the client is confidential (client_secret_basic). Default scope:
//     "openid profile email groups offline_access".
//
//   node idp_login.mjs CENTRAL_ISSUER USER --follow-url AUTHORIZE_URL
//     Drives login + consent for an authorize URL built by someone else (e.g. muster's CLI, which listens on its
//     loopback redirect URI), then GETs the redirect that leaves the OP and follows redirects after it as a browser
//     does (up to 5: muster's own /oauth/callback sends on to its client's loopback), and prints the last response's
//     HTTP status as one line (e.g. `200`). Exit 0 iff status < 400.
//     With --location, prints {"status":..,"location":..} instead: where that callback sent the browser next (muster
//     as an authorization server redirects to its agent's redirect URI, which need not listen).
//
// Exit status 1 with a message on stderr on any failure (e.g. the OP answered an OAuth error to the redirect URI).
import { createHash, randomBytes } from 'node:crypto';

const args = process.argv.slice(2);
const pos = [];
const o = { client: 'muster', redirect: 'http://127.0.0.1:8765/callback', scope: 'openid profile email groups offline_access' };
for (let i = 0; i < args.length; i++) {
  if (args[i].startsWith('--')) {
    const [k, v] = args[i].slice(2).split(/=(.*)/s);
    o[k] = v ?? (k === 'location' ? '' : args[++i]);
  } else pos.push(args[i]);
}
const [ISSUER_RAW, USER] = pos;
if (!ISSUER_RAW || !USER) {
  console.error('usage: idp_login.mjs ISSUER USER [--client ID] [--secret S] [--redirect URI] [--scope S] | [--follow-url URL]');
  process.exit(2);
}
const ISSUER = ISSUER_RAW.replace(/\/$/, '');
const issuerOrigin = new URL(ISSUER).origin;
const die = (msg) => { console.error(`idp_login: ${msg}`); process.exit(1); };

const jar = new Map();
async function req(url, opts = {}) {
  const u = new URL(url, ISSUER);
  const headers = { ...(opts.headers || {}) };
  if (u.origin === issuerOrigin && jar.size) headers.cookie = [...jar].map(([k, v]) => `${k}=${v}`).join('; ');
  const res = await fetch(u, { ...opts, headers, redirect: 'manual' });
  if (u.origin === issuerOrigin) {
    for (const c of res.headers.getSetCookie()) {
      const [kv] = c.split(';');
      const i = kv.indexOf('=');
      const expired = /expires=Thu, 01 Jan 1970/i.test(c);
      if (expired) jar.delete(kv.slice(0, i)); else jar.set(kv.slice(0, i), kv.slice(i + 1));
    }
  }
  return res;
}
const form = (obj) => ({
  method: 'POST',
  headers: { 'content-type': 'application/x-www-form-urlencoded' },
  body: new URLSearchParams(obj).toString(),
});

// Follows redirects within the OP and submits the dev login / consent forms until a redirect leaves the OP
// (or targets `redirectPrefix`). Returns the absolute URL of that redirect.
async function driveToRedirect(authUrl, redirectPrefix) {
  let res = await req(authUrl);
  for (let step = 0; step < 20; step++) {
    if (res.status >= 300 && res.status < 400) {
      const loc = new URL(res.headers.get('location'), res.url || ISSUER).href;
      if ((redirectPrefix && loc.startsWith(redirectPrefix)) || new URL(loc).origin !== issuerOrigin) return loc;
      res = await req(loc);
      continue;
    }
    const html = await res.text();
    if (res.status !== 200) {
      const detail = [...html.matchAll(/<pre>([\s\S]*?)<\/pre>/g)].map((x) => x[1]).join(' ') || html.replace(/<style[\s\S]*?<\/style>|<[^>]+>/g, ' ');
      die(`OP answered HTTP ${res.status}: ${detail.replace(/\s+/g, ' ').trim().slice(0, 400)}`);
    }
    const action = html.match(/<form[^>]*action="([^"]+)"/)?.[1];
    if (!action) die(`no form in OP page: ${html.replace(/\s+/g, ' ').slice(0, 400)}`);
    const target = new URL(action.replace(/&amp;/g, '&'), ISSUER).href;
    if (/name="login"/.test(html)) res = await req(target, form({ prompt: 'login', login: USER, password: 'x' }));
    else if (/name="prompt" value="consent"|consent/i.test(html)) res = await req(target, form({ prompt: 'consent' }));
    else die(`unrecognised OP form: ${html.replace(/\s+/g, ' ').slice(0, 400)}`);
  }
  die('too many steps');
}

function codeFrom(loc) {
  const u = new URL(loc);
  const p = u.hash && !u.searchParams.get('code') ? new URLSearchParams(u.hash.slice(1)) : u.searchParams;
  if (p.get('error')) die(`OP redirected with error=${p.get('error')} ${p.get('error_description') || ''}`);
  const code = p.get('code');
  if (!code) die(`no code in redirect ${loc}`);
  return { code, state: p.get('state') };
}

if (o['follow-url']) {
  let loc = await driveToRedirect(o['follow-url']);
  // As a browser does: GET the redirect that left the OP and, unless --location, every redirect after it
  // (muster as an authorization server sends the browser on from its callback to the client's loopback).
  for (let hop = 0; ; hop++) {
    const u = new URL(loc);
    if (u.searchParams.get('error')) console.error(`idp_login: redirected with error=${u.searchParams.get('error')}`);
    const r = await fetch(loc, { redirect: 'manual' });
    console.error(`idp_login: GET ${u.origin}${u.pathname} -> ${r.status}`);
    await r.arrayBuffer().catch(() => {});
    const next = r.headers.get('location');
    if (o.location !== undefined) {
      console.log(JSON.stringify({ status: r.status, location: next }));
      process.exit(r.status < 400 ? 0 : 1);
    }
    if (r.status >= 300 && r.status < 400 && next && hop < 5) { loc = new URL(next, loc).href; continue; }
    console.log(String(r.status));
    process.exit(r.status < 400 ? 0 : 1);
  }
}

const disc = await (await fetch(`${ISSUER}/.well-known/openid-configuration`)).json();
const verifier = randomBytes(32).toString('base64url');
const challenge = createHash('sha256').update(verifier).digest('base64url');
const state = randomBytes(8).toString('hex');
const authUrl = `${disc.authorization_endpoint}?${new URLSearchParams({
  client_id: o.client, response_type: 'code', redirect_uri: o.redirect, scope: o.scope,
  code_challenge: challenge, code_challenge_method: 'S256', state, nonce: randomBytes(8).toString('hex'), prompt: 'consent',
})}`;
const loc = await driveToRedirect(authUrl, o.redirect);
const { code, state: gotState } = codeFrom(loc);
if (gotState !== state) die(`state mismatch: ${gotState}`);

const headers = { 'content-type': 'application/x-www-form-urlencoded' };
const params = { grant_type: 'authorization_code', code, redirect_uri: o.redirect, code_verifier: verifier };
if (o.secret) headers.authorization = `Basic ${Buffer.from(`${encodeURIComponent(o.client)}:${encodeURIComponent(o.secret)}`).toString('base64')}`;
else params.client_id = o.client;
const r = await fetch(disc.token_endpoint, { method: 'POST', headers, body: new URLSearchParams(params).toString() });
const tok = await r.json();
if (!r.ok || !tok.id_token) die(`token endpoint HTTP ${r.status}: ${JSON.stringify(tok)}`);
console.log(JSON.stringify({
  id_token: tok.id_token, access_token: tok.access_token, refresh_token: tok.refresh_token,
  expires_in: tok.expires_in, token_type: tok.token_type, scope: tok.scope,
}));
