// Identity-provider peers for muster's end-to-end SSO + RFC 8693 token-exchange tests (test-only code).
//
//   node idp.mjs central PORT [--client ID[:SECRET]]... [--redirect URI]... [--user-groups USER=g1,g2]...
//   node idp.mjs cluster PORT --trust CENTRAL_ISSUER --connector central-dex --client ID:SECRET
//                [--audience AUD]... [--subject-audience AUD] [--ttl SECONDS] [--fail-with ERROR]
//                [--subject-error dex|rfc8693] [--dex-sub]
//
// Both listen on 127.0.0.1 only, use issuer http://127.0.0.1:PORT and print exactly one stdout line,
// `ready <issuer>`, once listening (logs go to stderr). Stop them with SIGTERM/SIGINT.
// Modules: oidc-provider@9.13.3 and jose@6.2.18 from tests/peers/npm (scripts/install-peers.sh); they are
// loaded from $MUSTER_NODE_MODULES (ES modules ignore NODE_PATH). Run with Node 22 ($MUSTER_NODE22/node).
//
// central -- a real OpenID Provider (panva/oidc-provider) standing in for the central Dex:
//   * clients: default one public PKCE client `muster` (token_endpoint_auth_method none). `--client ID` adds a
//     public client, `--client ID:SECRET` a confidential one (client_secret_basic or _post). All are
//     `application_type: native`, registered with redirect_uris http://127.0.0.1/callback and
//     http://localhost/callback (+ every --redirect URI). oidc-provider implements RFC 8252 sec. 7.3 for native
//     clients: a loopback (127.0.0.1 / localhost / [::1]) http redirect_uri matches a registered one with the
//     port ignored, so http://127.0.0.1:<any port>/callback works with no override.
//   * code + PKCE (S256, required), refresh_token (always issued, no offline_access needed), RS256 ID tokens
//     with sub, email, email_verified, name, preferred_username, groups, aud = the client id (string), exp =
//     now + $ID_TOKEN_TTL (default 600 s; the access token gets the same TTL, so expires_in == ID_TOKEN_TTL).
//   * dev login + consent forms (devInteractions): any username, any password. Groups default to
//     ["sre", "team-<user>"]; override per user with --user-groups alice=a,b or env IDP_USERS='{"alice":{"groups":[..]}}'.
//
// cluster -- a Dex-compatible token-exchange endpoint (small node:http server + jose), i.e. a cluster's Dex whose
//   OIDC connector `--connector` trusts the central issuer. Publishes /.well-known/openid-configuration (and the
//   same document at /.well-known/oauth-authorization-server), /jwks (and Dex's /keys). POST /token implements Dex's
//   handleTokenExchange (dexidp/dex server/grant_tokenexchange.go):
//   * client auth: HTTP Basic only (id and secret form-urldecoded as Dex does); missing/wrong -> 401 invalid_client.
//   * grant_type must be urn:ietf:params:oauth:grant-type:token-exchange, else 400 unsupported_grant_type.
//   * subject_token_type must be ...:id_token or ...:access_token, else 400 request_not_supported;
//     missing subject_token -> 400 invalid_request; connector_id != --connector -> 400 invalid_request
//     ("Requested connector does not exist.").
//   * the subject token is verified against the trusted issuer's discovery + JWKS (signature, iss, exp; aud only
//     with --subject-audience). Failure -> Dex answers 401 access_denied (default, `--subject-error dex`);
//     `--subject-error rfc8693` answers 400 invalid_grant instead (RFC 8693 sec. 2.2.2).
//   * requested_token_type ...:id_token or ...:access_token (default access_token, as Dex); both are RS256 JWTs
//     signed with this cluster's key. Claims as Dex's SignIDToken: iss, sub (the subject's sub; with --dex-sub
//     Dex's base64url(protobuf{user_id, connector_id}) encoding), aud, exp = now + TTL ($EXCHANGED_TTL or --ttl,
//     default 300), iat, jti; email + email_verified only with scope `email`, groups only with `groups`, name +
//     preferred_username only with `profile`, federated_claims with `federated:id`.
//   * aud (Dex GetAudience): every scope `audience:server:client_id:X` adds X; if there is at least one X the
//     requesting client id is appended too and azp = client id; with none, aud = the client id. A single aud is
//     serialized as a string, several as an array (Dex's audience.MarshalJSON). If --audience is given, X must be
//     one of those (Dex's trusted-peers check), else 500 server_error like Dex.
//   * response: {"access_token", "issued_token_type", "token_type":"bearer", "expires_in": TTL}, Cache-Control: no-store.
//   TEST-ONLY hooks (not Dex): GET /test/stats -> {"exchanges":N,"by_sub":{..},"failures":M,"last":{..}};
//   POST /test/reset zeroes counters; POST /test/fail {"error":"temporarily_unavailable","status":503,
//   "description":"..","count":N} makes the next N (default: all) /token calls fail after client auth;
//   POST /test/fail {} or DELETE /test/fail clears it; POST /test/delay {"ms":250} delays every /token answer.
//   POST /test/sign {"claims":{..},"header":{..}} -> {"token":..} signs arbitrary claims with the cluster key
//   (iss/iat/exp default to fresh values; a claim given as null is omitted) to craft expired/odd tokens.
//
// Verified by hand (exact commands; PORTs arbitrary):
//   source ~/.cache/muster-peers/env.sh; N=$MUSTER_NODE22/node; P=tests/peers
//   $N $P/idp.mjs central 9501 &                                                         # ready http://127.0.0.1:9501
//   $N $P/idp.mjs cluster 9502 --trust http://127.0.0.1:9501 --connector central-dex \
//        --client muster-exchange:exchange-secret --audience cluster-a-k8s &             # ready http://127.0.0.1:9502
//   $N $P/idp.mjs cluster 9503 --trust http://127.0.0.1:9501 --connector central-dex \
//        --client muster-exchange:exchange-secret --audience cluster-b-k8s &
//   ID=$($N $P/idp_login.mjs http://127.0.0.1:9501 alice | jq -r .id_token)
//   X=$(curl -s -u muster-exchange:exchange-secret http://127.0.0.1:9502/token \
//        -d grant_type=urn:ietf:params:oauth:grant-type:token-exchange --data-urlencode subject_token=$ID \
//        -d subject_token_type=urn:ietf:params:oauth:token-type:id_token \
//        -d requested_token_type=urn:ietf:params:oauth:token-type:id_token -d connector_id=central-dex \
//        --data-urlencode 'scope=openid profile email groups audience:server:client_id:cluster-a-k8s' | jq -r .access_token)
//     -> iss http://127.0.0.1:9502, sub alice, aud ["cluster-a-k8s","muster-exchange"], azp muster-exchange
//   sed -e s/@ISSUER@/http:\\/\\/127.0.0.1:9502/ -e s/@AUDIENCE@/cluster-a-k8s/ $P/k8s-mcp-oauth.toml.tmpl > /tmp/k.toml
//   $MUSTER_K8S_MCP --config /tmp/k.toml --port 9510 --bind-address 127.0.0.1 --kubeconfig tests/peers/fake-kubeconfig.yaml --read-only &
//   ../shared/peers/scripts/mcp-tools-list.sh http://127.0.0.1:9510/mcp -H "Authorization: Bearer $X"
//     -> 200, "14 tools: configuration_view events_list ..." (read-only). Alice's central ID token, a token exchanged
//        at 9503 (iss 9503, aud cluster-b-k8s) and no token -> 401 (WWW-Authenticate: Bearer realm="Kubernetes MCP
//        Server", audience="cluster-a-k8s", error="invalid_token" | "missing_token").
//   Same curl with -u muster-exchange:nope (or no -u) -> 401 {"error":"invalid_client",...}; connector_id=nope ->
//   400 {"error":"invalid_request","error_description":"Requested connector does not exist."}; scope asking 9502 for
//   audience:server:client_id:cluster-b-k8s -> 500 server_error (untrusted peer, as Dex); expired subject (central
//   started with ID_TOKEN_TTL=1, wait 2 s) -> 401 {"error":"access_denied"} (Dex), or with --subject-error rfc8693
//   400 {"error":"invalid_grant","error_description":"subject_token rejected: ERR_JWT_EXPIRED"}.
import { createServer } from 'node:http';
import { createRequire } from 'node:module';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { randomUUID } from 'node:crypto';

// ---- module loading: bare import first, then $MUSTER_NODE_MODULES (ES modules ignore NODE_PATH) -------------
async function load(name) {
  try {
    return await import(name);
  } catch (e) {
    if (e?.code !== 'ERR_MODULE_NOT_FOUND') throw e;
  }
  const nm = process.env.MUSTER_NODE_MODULES || join(homedir(), '.cache/muster-peers/npm/node_modules');
  const pkgDir = join(nm, name);
  const pkg = createRequire(join(nm, 'noop.js'))(join(pkgDir, 'package.json'));
  const exp = pkg.exports?.['.'] ?? pkg.exports;
  const entry = (typeof exp === 'string' ? exp : exp?.import ?? exp?.default) ?? pkg.module ?? pkg.main ?? 'index.js';
  return import(pathToFileURL(join(pkgDir, typeof entry === 'string' ? entry : entry.default)).href);
}

// ---- args ---------------------------------------------------------------------------------------------------
const [mode, portArg, ...rest] = process.argv.slice(2);
const usage = () => {
  console.error('usage: idp.mjs central PORT [--client ID[:SECRET]]... [--redirect URI]... [--user-groups USER=g1,g2]...\n'
    + '       idp.mjs cluster PORT --trust ISSUER --connector ID --client ID:SECRET [--audience AUD]... [--subject-audience AUD]\n'
    + '                            [--ttl S] [--fail-with ERROR] [--subject-error dex|rfc8693] [--dex-sub]');
  process.exit(2);
};
if (!['central', 'cluster'].includes(mode) || !/^\d+$/.test(portArg || '')) usage();
const PORT = Number(portArg);
const ISSUER = `http://127.0.0.1:${PORT}`;
const opts = { client: [], redirect: [], audience: [], 'user-groups': [] };
for (let i = 0; i < rest.length; i++) {
  const a = rest[i];
  if (!a.startsWith('--')) usage();
  let [k, v] = a.slice(2).split(/=(.*)/s);
  if (k === 'dex-sub') { opts[k] = true; continue; }
  if (v === undefined) { v = rest[++i]; if (v === undefined) usage(); }
  if (Array.isArray(opts[k])) opts[k].push(v); else opts[k] = v;
}
const log = (...a) => console.error(`[idp ${mode} :${PORT}]`, ...a);
const onSignal = () => process.exit(0);
process.on('SIGTERM', onSignal);
process.on('SIGINT', onSignal);

const TT = {
  id: 'urn:ietf:params:oauth:token-type:id_token',
  access: 'urn:ietf:params:oauth:token-type:access_token',
};
const TE_GRANT = 'urn:ietf:params:oauth:grant-type:token-exchange';

if (mode === 'central') await central(); else await cluster();

// =============================================================================================================
async function central() {
  const { default: Provider } = await load('oidc-provider');
  const { generateKeyPair, exportJWK } = await load('jose');
  const ttl = Number(process.env.ID_TOKEN_TTL || 600);

  const users = JSON.parse(process.env.IDP_USERS || '{}');
  for (const ug of opts['user-groups']) {
    const [u, gs = ''] = ug.split('=');
    users[u] = { ...(users[u] || {}), groups: gs.split(',').filter(Boolean) };
  }

  const { privateKey } = await generateKeyPair('RS256', { extractable: true });
  const jwk = { ...(await exportJWK(privateKey)), kid: randomUUID(), use: 'sig', alg: 'RS256' };

  const redirectUris = ['http://127.0.0.1/callback', 'http://localhost/callback', ...opts.redirect];
  const clientSpecs = opts.client.length ? opts.client : ['muster'];
  const clients = clientSpecs.map((spec) => {
    const i = spec.indexOf(':');
    const [id, secret] = i < 0 ? [spec, undefined] : [spec.slice(0, i), spec.slice(i + 1)];
    return {
      client_id: id,
      ...(secret ? { client_secret: secret, token_endpoint_auth_method: 'client_secret_basic' } : { token_endpoint_auth_method: 'none' }),
      application_type: 'native', // RFC 8252 7.3: loopback redirect URIs match with any port
      redirect_uris: redirectUris,
      response_types: ['code'],
      grant_types: ['authorization_code', 'refresh_token'],
    };
  });

  const provider = new Provider(ISSUER, {
    clients,
    jwks: { keys: [jwk] },
    cookies: { keys: ['muster-idp-test-cookie-key'] },
    async findAccount(_ctx, id) {
      const u = users[id] || {};
      return {
        accountId: id,
        async claims() {
          return {
            sub: id, name: u.name ?? id, preferred_username: id,
            email: u.email ?? `${id}@example.test`, email_verified: true,
            groups: u.groups ?? ['sre', `team-${id}`],
          };
        },
      };
    },
    claims: {
      openid: ['sub'], profile: ['name', 'preferred_username'], email: ['email', 'email_verified'], groups: ['groups'],
    },
    scopes: ['openid', 'offline_access', 'profile', 'email', 'groups'],
    conformIdTokenClaims: false, // put the scope-requested claims (email, groups) into the ID token itself
    pkce: { required: () => true },
    issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
    features: {
      devInteractions: { enabled: true }, // built-in login + consent HTML forms; idp_login.mjs drives them
      revocation: { enabled: true },
    },
    ttl: {
      IdToken: ttl, AccessToken: ttl, AuthorizationCode: 60, RefreshToken: 86400,
      Grant: 86400, Session: 86400, Interaction: 600,
    },
  });
  provider.proxy = false;
  provider.on('server_error', (_ctx, err) => log('server_error', err));
  provider.on('grant.error', (_ctx, err) => log('grant.error', err?.message, err?.error_description ?? ''));
  provider.on('authorization.error', (_ctx, err) => log('authorization.error', err?.message, err?.error_description ?? ''));
  const server = provider.listen(PORT, '127.0.0.1', () => {
    log(`clients=${clients.map((c) => c.client_id).join(',')} redirect_uris=${redirectUris.join(',')} ID_TOKEN_TTL=${ttl}`);
    process.stdout.write(`ready ${ISSUER}\n`);
  });
  server.on('error', (e) => { log('listen failed:', e.message); process.exit(1); });
}

// =============================================================================================================
async function cluster() {
  const jose = await load('jose');
  const { generateKeyPair, exportJWK, SignJWT, jwtVerify, createRemoteJWKSet } = jose;
  if (!opts.trust || !opts.connector || !opts.client.length) usage();
  const trust = opts.trust.replace(/\/$/, '');
  const [clientId, clientSecret] = (() => { const s = opts.client[0]; const i = s.indexOf(':'); return [s.slice(0, i), s.slice(i + 1)]; })();
  if (!clientId || !clientSecret) usage();
  const ttl = Number(opts.ttl || process.env.EXCHANGED_TTL || 300);
  const subjectError = opts['subject-error'] || 'dex';
  if (!['dex', 'rfc8693'].includes(subjectError)) usage();

  const { privateKey, publicKey } = await generateKeyPair('RS256', { extractable: true });
  const kid = randomUUID();
  const publicJwk = { ...(await exportJWK(publicKey)), kid, use: 'sig', alg: 'RS256' };

  // Trusted (connector) issuer: discovery -> jwks_uri, resolved lazily so start order does not matter.
  let remoteJwks;
  async function trustedJwks() {
    if (remoteJwks) return remoteJwks;
    const r = await fetch(`${trust}/.well-known/openid-configuration`);
    if (!r.ok) throw new Error(`discovery of ${trust}: HTTP ${r.status}`);
    const d = await r.json();
    if (d.issuer !== trust) throw new Error(`discovery issuer mismatch: ${d.issuer} != ${trust}`);
    // cooldownDuration 0: a restarted central (new key) is picked up at once instead of after jose's 30 s cooldown.
    remoteJwks = createRemoteJWKSet(new URL(d.jwks_uri), { cooldownDuration: 0 });
    return remoteJwks;
  }

  // TEST-ONLY state.
  const stats = { exchanges: 0, by_sub: {}, failures: 0, last: null };
  let fault = opts['fail-with'] ? { error: opts['fail-with'], status: 400, count: Infinity } : null;
  let delayMs = 0;

  const discovery = {
    issuer: ISSUER,
    authorization_endpoint: `${ISSUER}/auth`,
    token_endpoint: `${ISSUER}/token`,
    jwks_uri: `${ISSUER}/jwks`,
    response_types_supported: ['code'],
    subject_types_supported: ['public'],
    id_token_signing_alg_values_supported: ['RS256'],
    grant_types_supported: [TE_GRANT],
    token_endpoint_auth_methods_supported: ['client_secret_basic'],
    scopes_supported: ['openid', 'email', 'groups', 'profile', 'offline_access', 'federated:id'],
    claims_supported: ['iss', 'sub', 'aud', 'iat', 'exp', 'azp', 'email', 'email_verified', 'groups', 'name', 'preferred_username'],
  };

  const send = (res, status, body, extra = {}) => {
    res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store', pragma: 'no-cache', ...extra });
    res.end(JSON.stringify(body));
  };
  const readBody = (req) => new Promise((ok, ko) => {
    const chunks = []; let n = 0;
    req.on('data', (c) => { n += c.length; if (n > 1 << 20) { ko(new Error('body too large')); req.destroy(); } else chunks.push(c); });
    req.on('end', () => ok(Buffer.concat(chunks).toString('utf8')));
    req.on('error', ko);
  });
  const formDecode = (s) => decodeURIComponent(s.replace(/\+/g, ' '));

  // Dex's GenSubject: base64url(no pad) of protobuf IDTokenSubject{1: user_id, 2: conn_id}.
  const dexSub = (userId, connId) => {
    const f = (tag, s) => { const b = Buffer.from(s); return Buffer.concat([Buffer.from([tag, b.length]), b]); };
    return Buffer.concat([f(0x0a, userId), f(0x12, connId)]).toString('base64url');
  };

  async function token(req, res) {
    const fail = (status, error, desc, extra) => {
      stats.failures++;
      log(`/token -> ${status} ${error}${desc ? ` (${desc})` : ''}`);
      send(res, status, desc ? { error, error_description: desc } : { error }, extra);
    };
    if (req.method !== 'POST') return fail(400, 'invalid_request', 'method not allowed');
    const body = await readBody(req);
    const q = new URLSearchParams(body);
    if (delayMs) await new Promise((r) => setTimeout(r, delayMs));

    // Client authentication: HTTP Basic only.
    const m = /^Basic\s+(.+)$/i.exec(req.headers.authorization || '');
    let cid, csec;
    if (m) {
      const dec = Buffer.from(m[1], 'base64').toString('utf8');
      const i = dec.indexOf(':');
      if (i >= 0) { try { cid = formDecode(dec.slice(0, i)); csec = formDecode(dec.slice(i + 1)); } catch { /* malformed */ } }
    }
    if (cid !== clientId || csec !== clientSecret) {
      return fail(401, 'invalid_client', 'Invalid client credentials.', { 'www-authenticate': 'Basic realm="dex"' });
    }

    if (fault && fault.count > 0) {
      fault.count--;
      const f = fault;
      if (fault.count <= 0) fault = null;
      return fail(f.status || 400, f.error, f.description);
    }

    const grantType = q.get('grant_type');
    if (grantType !== TE_GRANT) return fail(400, 'unsupported_grant_type');

    const scopes = (q.get('scope') || '').split(/\s+/).filter(Boolean);
    const requestedTokenType = q.get('requested_token_type') || TT.access;
    const subjectToken = q.get('subject_token') || '';
    const subjectTokenType = q.get('subject_token_type') || '';
    const connId = q.get('connector_id') || '';

    if (![TT.id, TT.access].includes(subjectTokenType)) return fail(400, 'request_not_supported', 'Invalid subject_token_type.');
    if (!subjectToken) return fail(400, 'invalid_request', 'Missing subject_token');
    if (connId !== opts.connector) return fail(400, 'invalid_request', 'Requested connector does not exist.');

    let claims;
    try {
      const jwks = await trustedJwks();
      ({ payload: claims } = await jwtVerify(subjectToken, jwks, {
        issuer: trust,
        ...(opts['subject-audience'] ? { audience: opts['subject-audience'] } : {}),
      }));
      if (!claims.sub) throw new Error('subject token has no sub');
    } catch (e) {
      log('subject token rejected:', e.code || '', e.message);
      if (subjectError === 'rfc8693') return fail(400, 'invalid_grant', `subject_token rejected: ${e.code || e.message}`);
      return fail(401, 'access_denied'); // exactly what Dex answers (no description)
    }
    if (![TT.id, TT.access].includes(requestedTokenType)) return fail(400, 'request_not_supported', 'Invalid requested_token_type.');

    // Claims per Dex SignIDToken.
    const now = Math.floor(Date.now() / 1000);
    const out = {
      iss: ISSUER,
      sub: opts['dex-sub'] ? dexSub(claims.sub, connId) : claims.sub,
      exp: now + ttl,
      iat: now,
      jti: randomUUID(),
    };
    const peers = [];
    for (const s of scopes) {
      if (s === 'email') { out.email = claims.email; out.email_verified = claims.email_verified ?? false; }
      else if (s === 'groups') out.groups = claims.groups ?? [];
      else if (s === 'profile') { out.name = claims.name ?? claims.preferred_username ?? claims.sub; out.preferred_username = claims.preferred_username; }
      else if (s === 'federated:id') out.federated_claims = { connector_id: connId, user_id: claims.sub };
      else if (s.startsWith('audience:server:client_id:')) {
        const peer = s.slice('audience:server:client_id:'.length);
        if (peer !== clientId && opts.audience.length && !opts.audience.includes(peer)) {
          log(`peer (${peer}) does not trust client (allowed: ${opts.audience.join(',')})`);
          return fail(500, 'server_error');
        }
        if (!peers.includes(peer)) peers.push(peer);
      }
    }
    let aud = peers.length ? [...peers] : [clientId];
    if (peers.length && !aud.includes(clientId)) aud.push(clientId);
    if (aud.length > 1) out.azp = clientId;
    out.aud = aud.length === 1 ? aud[0] : aud;
    for (const k of Object.keys(out)) if (out[k] === undefined) delete out[k];

    const jwt = await new SignJWT(out).setProtectedHeader({ alg: 'RS256', kid }).sign(privateKey);
    stats.exchanges++;
    stats.by_sub[claims.sub] = (stats.by_sub[claims.sub] || 0) + 1;
    stats.last = { sub: claims.sub, aud: out.aud, scope: scopes.join(' '), requested_token_type: requestedTokenType, connector_id: connId, at: now };
    log(`exchange ok sub=${claims.sub} aud=${JSON.stringify(out.aud)} ttl=${ttl}`);
    send(res, 200, { access_token: jwt, issued_token_type: requestedTokenType, token_type: 'bearer', expires_in: ttl });
  }

  const server = createServer(async (req, res) => {
    const path = new URL(req.url, ISSUER).pathname;
    try {
      if (req.method === 'GET' && (path === '/.well-known/openid-configuration' || path === '/.well-known/oauth-authorization-server')) {
        return send(res, 200, discovery);
      }
      if (req.method === 'GET' && (path === '/jwks' || path === '/keys')) return send(res, 200, { keys: [publicJwk] });
      if (path === '/token') return await token(req, res);
      if (path === '/auth') return send(res, 400, { error: 'unsupported_response_type', error_description: 'this test IdP only implements token exchange' });
      if (req.method === 'GET' && path === '/healthz') return send(res, 200, { ok: true });
      // ---- TEST-ONLY hooks (not part of Dex) ----
      if (req.method === 'GET' && path === '/test/stats') return send(res, 200, stats);
      if (req.method === 'POST' && path === '/test/reset') {
        Object.assign(stats, { exchanges: 0, by_sub: {}, failures: 0, last: null });
        return send(res, 200, stats);
      }
      if (path === '/test/fail' && (req.method === 'POST' || req.method === 'DELETE')) {
        const b = req.method === 'POST' ? JSON.parse((await readBody(req)) || '{}') : {};
        fault = b.error ? { error: b.error, status: b.status || 400, description: b.description, count: b.count ?? Infinity } : null;
        log('fault injection:', JSON.stringify(fault));
        return send(res, 200, { fail: fault && { ...fault, count: Number.isFinite(fault.count) ? fault.count : null } });
      }
      if (req.method === 'POST' && path === '/test/sign') {
        // Signs arbitrary claims with this cluster's key (iss/iat/exp default to a fresh token) so tests can craft
        // expired / wrong-audience / odd-shaped tokens. {"claims":{..},"header":{..}}; a claim set to null is dropped.
        const b = JSON.parse((await readBody(req)) || '{}');
        const now = Math.floor(Date.now() / 1000);
        const c = { iss: ISSUER, iat: now, exp: now + ttl, ...(b.claims || {}) };
        for (const k of Object.keys(c)) if (c[k] === null) delete c[k];
        const t = await new SignJWT(c).setProtectedHeader({ alg: 'RS256', kid, ...(b.header || {}) }).sign(privateKey);
        return send(res, 200, { token: t, claims: c });
      }
      if (req.method === 'POST' && path === '/test/delay') {
        delayMs = Number(JSON.parse((await readBody(req)) || '{}').ms || 0);
        return send(res, 200, { delay_ms: delayMs });
      }
      send(res, 404, { error: 'not_found' });
    } catch (e) {
      log('error', e);
      if (!res.headersSent) send(res, 500, { error: 'server_error' });
    }
  });
  server.on('error', (e) => { log('listen failed:', e.message); process.exit(1); });
  server.listen(PORT, '127.0.0.1', () => {
    log(`trust=${trust} connector=${opts.connector} client=${clientId} audiences=${opts.audience.join(',') || '*'} ttl=${ttl} subject-error=${subjectError}`);
    process.stdout.write(`ready ${ISSUER}\n`);
  });
}
