// A real OpenID Connect provider (npm `oidc-provider`, pinned in package.json) for tenantkit's
// end-to-end SSO tests. Test-only: scripted JSON interactions instead of HTML pages, and hooks
// to tamper with the next ID token and to rotate the signing keys. Never expose it.
//
//   OIDC_PORT=0 OIDC_CLIENTS='[{"client_id":"a","client_secret":"s","redirect_uris":["http://127.0.0.1:1/cb"]}]' \
//     node provider.mjs
//
// Listens on 127.0.0.1:$OIDC_PORT (0 or unset: a free port), issuer http://127.0.0.1:<port>,
// and prints `ready <issuer>` on stdout once listening. One line per request on stderr.
// Endpoints beside oidc-provider's own (/.well-known/openid-configuration, /auth, /token,
// /jwks, /me, /session/end): see scripts/oidc-provider/README.md.
import * as crypto from 'node:crypto';
import * as http from 'node:http';

import Provider, { errors } from 'oidc-provider';

const HOST = '127.0.0.1';
const SCOPES = ['openid', 'email', 'profile'];
const TAMPER_MODES = new Set(['nonce', 'aud', 'expired', 'iss', 'alg_none', 'hs256', 'wrong_key', 'azp', 'azp_only', 'amr']);
// Algorithms a client may ask for with id_token_signed_response_alg; RS256 is the default.
const KEY_ALGS = ['RS256', 'ES256', 'EdDSA'];

const log = (...parts) => process.stderr.write(`[oidc] ${parts.join(' ')}\n`);
const b64u = (input) => Buffer.from(input).toString('base64url');
const fromB64uJson = (part) => JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));

// ---------------------------------------------------------------------------------------------
// Signing keys: one per algorithm per generation, generated in memory at start and on rotation.
// ---------------------------------------------------------------------------------------------
let generation = 0;
const keysByKid = new Map(); // kid -> { alg, privateKey: KeyObject, jwk (private) }

function generateKey(alg, kid) {
  let pair;
  switch (alg) {
    case 'RS256':
      pair = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
      break;
    case 'ES256':
      pair = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
      break;
    case 'EdDSA':
      pair = crypto.generateKeyPairSync('ed25519');
      break;
    default:
      throw new Error(`unsupported alg ${alg}`);
  }
  const jwk = { ...pair.privateKey.export({ format: 'jwk' }), kid, alg, use: 'sig' };
  return { alg, kid, privateKey: pair.privateKey, jwk };
}

function newGeneration() {
  generation += 1;
  const salt = crypto.randomBytes(4).toString('hex');
  const keys = KEY_ALGS.map((alg) => generateKey(alg, `${alg.toLowerCase()}-g${generation}-${salt}`));
  for (const key of keys) keysByKid.set(key.kid, key);
  return keys;
}

function signCompact(alg, key, header, payload) {
  const input = `${b64u(JSON.stringify(header))}.${b64u(JSON.stringify(payload))}`;
  const data = Buffer.from(input);
  let sig;
  switch (alg) {
    case 'RS256':
      sig = crypto.sign('sha256', data, key);
      break;
    case 'ES256':
      sig = crypto.sign('sha256', data, { key, dsaEncoding: 'ieee-p1363' });
      break;
    case 'EdDSA':
    case 'Ed25519':
      sig = crypto.sign(null, data, key);
      break;
    case 'HS256':
      sig = crypto.createHmac('sha256', key).update(data).digest();
      break;
    case 'none':
      return `${input}.`;
    default:
      throw new Error(`cannot sign with ${alg}`);
  }
  return `${input}.${b64u(sig)}`;
}

let currentKeys = newGeneration();
let previousKeys = [];

// ---------------------------------------------------------------------------------------------
// State that outlives a provider instance (rotation swaps instances): clients, accounts,
// the adapter's store and the cookie signing keys.
// ---------------------------------------------------------------------------------------------
const clients = new Map(); // client_id -> metadata
const accounts = new Map(); // sub -> { email, email_verified, name }
const cookieKeys = [crypto.randomBytes(32).toString('base64url')];
// One-shot ID token mutations, applied to the next successful token endpoint response: per
// client_id (set with {"client_id": ...}; parallel tests with their own clients do not race) or,
// under '*', for whichever client comes first.
const tampers = new Map(); // client_id | '*' -> { mode, value }

// A minimal in-memory adapter. The `Client` model reads the `clients` map above, so clients
// registered at start or through POST /test/clients are found by every provider instance.
const store = new Map(); // `${model}:${id}` -> { payload, expiresAt }
const grantIndex = new Map(); // grantId -> Set of keys
const GRANTABLE = new Set(['AccessToken', 'AuthorizationCode', 'RefreshToken', 'DeviceCode',
  'BackchannelAuthenticationRequest', 'PreAuthorizedCode']);

class TestAdapter {
  constructor(model) {
    this.model = model;
  }

  key(id) {
    return `${this.model}:${id}`;
  }

  static get(key) {
    const entry = store.get(key);
    if (!entry) return undefined;
    if (entry.expiresAt !== undefined && entry.expiresAt <= Date.now()) {
      store.delete(key);
      return undefined;
    }
    return entry.payload;
  }

  async upsert(id, payload, expiresIn) {
    if (this.model === 'Client') {
      clients.set(id, payload);
      return;
    }
    const key = this.key(id);
    const expiresAt = typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : undefined;
    store.set(key, { payload, expiresAt });
    if (this.model === 'Session' && payload.uid) {
      store.set(`sessionUid:${payload.uid}`, { payload: id, expiresAt });
    }
    if (payload.userCode) {
      store.set(`userCode:${payload.userCode}`, { payload: id, expiresAt });
    }
    if (GRANTABLE.has(this.model) && payload.grantId) {
      if (!grantIndex.has(payload.grantId)) grantIndex.set(payload.grantId, new Set());
      grantIndex.get(payload.grantId).add(key);
    }
  }

  async find(id) {
    if (this.model === 'Client') {
      const metadata = clients.get(id);
      return metadata ? structuredClone(metadata) : undefined;
    }
    return TestAdapter.get(this.key(id));
  }

  async findByUid(uid) {
    const id = TestAdapter.get(`sessionUid:${uid}`);
    return id === undefined ? undefined : this.find(id);
  }

  async findByUserCode(userCode) {
    const id = TestAdapter.get(`userCode:${userCode}`);
    return id === undefined ? undefined : this.find(id);
  }

  async consume(id) {
    const payload = TestAdapter.get(this.key(id));
    if (payload) payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) {
    if (this.model === 'Client') {
      clients.delete(id);
      return;
    }
    store.delete(this.key(id));
  }

  async revokeByGrantId(grantId) {
    for (const key of grantIndex.get(grantId) ?? []) store.delete(key);
    grantIndex.delete(grantId);
  }
}

// ---------------------------------------------------------------------------------------------
// The provider (rebuilt on rotation).
// ---------------------------------------------------------------------------------------------
const requestedPort = Number.parseInt(process.env.OIDC_PORT ?? '0', 10);
if (!Number.isInteger(requestedPort) || requestedPort < 0 || requestedPort > 65535) {
  log(`invalid OIDC_PORT ${process.env.OIDC_PORT}`);
  process.exit(2);
}
let issuer; // set once listening
let provider;
let providerHandler;

function buildProvider() {
  const p = new Provider(issuer, {
    adapter: TestAdapter,
    clients: [],
    jwks: { keys: [...currentKeys, ...previousKeys].map((key) => key.jwk) },
    cookies: { keys: cookieKeys },
    scopes: SCOPES,
    claims: {
      acr: null,
      auth_time: null,
      sid: null,
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name'],
    },
    // Put the scope-granted claims (email, email_verified, name) in the ID token too, not only
    // at userinfo (oidc-provider's default keeps them out of ID tokens issued with an access token).
    conformIdTokenClaims: false,
    responseTypes: ['code'],
    pkce: { required: () => true }, // oidc-provider 9 supports S256 only
    features: {
      devInteractions: { enabled: false },
      resourceIndicators: { enabled: false },
      rpInitiatedLogout: { enabled: true },
      userinfo: { enabled: true },
    },
    enabledJWA: { idTokenSigningAlgValues: ['RS256', 'ES256', 'EdDSA'] },
    clientAuthMethods: ['client_secret_basic', 'client_secret_post'],
    clientBasedCORS: () => false,
    async findAccount(_ctx, sub) {
      const account = accounts.get(sub);
      if (!account) return undefined;
      return {
        accountId: sub,
        async claims() {
          return { sub, ...account };
        },
      };
    },
    interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
    ttl: {
      AccessToken: 3600,
      AuthorizationCode: 60,
      Grant: 3600,
      IdToken: 3600,
      Interaction: 600,
      Session: 3600,
    },
    async renderError(ctx, out) {
      ctx.type = 'json';
      ctx.body = out;
    },
  });

  // Tamper hook: rewrites the id_token of the next successful token endpoint response.
  p.use(async (ctx, next) => {
    await next();
    if (
      tampers.size
      && ctx.method === 'POST'
      && ctx.path === '/token'
      && ctx.status === 200
      && ctx.body
      && typeof ctx.body === 'object'
      && typeof ctx.body.id_token === 'string'
    ) {
      const clientId = ctx.oidc?.client?.clientId;
      const slot = tampers.has(clientId) ? clientId : '*';
      const tamper = tampers.get(slot);
      if (tamper) {
        tampers.delete(slot);
        ctx.body = { ...ctx.body, id_token: tamperIdToken(ctx.body.id_token, tamper.mode, tamper.value) };
        log(`tamper ${tamper.mode} applied for ${clientId}`);
      }
    }
  });
  p.on('server_error', (_ctx, err) => log('server_error', err?.stack ?? err));
  return p;
}

function otherClientId(own) {
  for (const id of clients.keys()) if (id !== own) return id;
  return 'tenantkit-test-other-client';
}

function tamperIdToken(idToken, mode, value) {
  const [h, pl] = idToken.split('.');
  const header = fromB64uJson(h);
  const payload = fromB64uJson(pl);
  const real = keysByKid.get(header.kid);
  if (!real) throw new Error(`id_token kid ${header.kid} unknown`);
  const clientId = Array.isArray(payload.aud) ? payload.aud[0] : payload.aud;
  const now = Math.floor(Date.now() / 1000);
  const resign = () => signCompact(header.alg, real.privateKey, header, payload);

  switch (mode) {
    case 'nonce':
      payload.nonce = value ?? `tampered-${crypto.randomBytes(8).toString('hex')}`;
      return resign();
    case 'aud':
      payload.aud = value ?? otherClientId(clientId);
      delete payload.azp;
      return resign();
    case 'expired': {
      const lifetime = Math.max(60, (payload.exp ?? now) - (payload.iat ?? now));
      payload.exp = now - 3600;
      payload.iat = payload.exp - lifetime;
      if (typeof payload.auth_time === 'number') payload.auth_time = Math.min(payload.auth_time, payload.iat);
      return resign();
    }
    case 'iss':
      // Starts with the real issuer: also catches prefix comparisons.
      payload.iss = value ?? `${issuer}/evil`;
      return resign();
    case 'alg_none':
      return signCompact('none', null, { alg: 'none' }, payload);
    case 'hs256': {
      const secret = clients.get(clientId)?.client_secret;
      if (!secret) throw new Error(`client ${clientId} has no secret for hs256`);
      return signCompact('HS256', Buffer.from(secret, 'utf8'), { ...header, alg: 'HS256' }, payload);
    }
    case 'wrong_key': {
      const fresh = generateKey(real.alg, header.kid);
      return signCompact(header.alg, fresh.privateKey, header, payload);
    }
    case 'azp': {
      const other = value ?? otherClientId(clientId);
      payload.aud = [clientId, other];
      payload.azp = other;
      return resign();
    }
    case 'azp_only':
      // One audience (the client's) but another authorized party.
      payload.azp = value ?? otherClientId(clientId);
      return resign();
    case 'amr':
      // The methods the provider says it checked (comma-separated `value`), re-signed.
      payload.amr = (value ?? 'pwd,otp').split(',');
      return resign();
    default:
      throw new Error(`unknown tamper mode ${mode}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Clients.
// ---------------------------------------------------------------------------------------------
const CLIENT_FIELDS = ['client_id', 'client_secret', 'redirect_uris', 'id_token_signed_response_alg',
  'token_endpoint_auth_method', 'post_logout_redirect_uris', 'client_name'];

async function registerClient(input) {
  if (!input || typeof input !== 'object' || Array.isArray(input)) {
    throw new errors.InvalidClientMetadata('client must be a JSON object');
  }
  const metadata = {};
  for (const field of CLIENT_FIELDS) if (input[field] !== undefined) metadata[field] = input[field];
  if (typeof metadata.client_id !== 'string' || !metadata.client_id) {
    throw new errors.InvalidClientMetadata('client_id is required');
  }
  metadata.grant_types = ['authorization_code'];
  metadata.response_types = ['code'];
  // Validates the metadata (redirect URIs, algorithms, secret presence) exactly as the
  // provider will when the client is used; throws InvalidClientMetadata / InvalidRedirectUri.
  const client = new provider.Client(metadata);
  clients.set(client.clientId, client.metadata());
  return client.metadata();
}

// ---------------------------------------------------------------------------------------------
// HTTP plumbing: our own routes first, oidc-provider for everything else.
// ---------------------------------------------------------------------------------------------
function sendJson(res, status, body, headers = {}) {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'cache-control': 'no-store',
    'content-length': Buffer.byteLength(text),
    ...headers,
  });
  res.end(text);
}

async function readBody(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > 1 << 20) throw Object.assign(new Error('body too large'), { status: 413 });
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  const type = (req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
  if (!text) return {};
  // (curl -d sends JSON as form-urlencoded unless told otherwise: accept it.)
  if (type === 'application/x-www-form-urlencoded' && !/^\s*[{[]/.test(text)) {
    return Object.fromEntries(new URLSearchParams(text));
  }
  try {
    return JSON.parse(text);
  } catch {
    throw Object.assign(new Error('body must be JSON or application/x-www-form-urlencoded'), { status: 400 });
  }
}

function oidcErrorBody(err) {
  return {
    error: err.error ?? 'invalid_request',
    error_description: err.error_description ?? err.message,
  };
}

async function interactionFor(req, res, uid) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) {
    throw new errors.SessionNotFound('interaction cookie does not match the interaction in the path');
  }
  return details;
}

function subFor(email) {
  return `sub-${crypto.createHash('sha256').update(email).digest('hex').slice(0, 24)}`;
}

function parseBool(value, fallback) {
  if (value === undefined || value === null || value === '') return fallback;
  if (value === true || value === false) return value;
  const text = String(value).toLowerCase();
  if (text === 'true' || text === '1') return true;
  if (text === 'false' || text === '0') return false;
  throw new errors.InvalidRequest('email_verified must be "true" or "false"');
}

async function finishLogin(req, res, uid, body) {
  const details = await interactionFor(req, res, uid);
  const email = typeof body.email === 'string' ? body.email.trim() : '';
  if (!email) throw new errors.InvalidRequest('email is required');
  const sub = typeof body.sub === 'string' && body.sub ? body.sub : subFor(email.toLowerCase());
  const name = typeof body.name === 'string' && body.name ? body.name : email.split('@')[0];
  accounts.set(sub, { email, email_verified: parseBool(body.email_verified, true), name });

  const { params, prompt } = details;
  // Login and consent in one step: a fresh grant for this account and client covering every
  // scope (and claim) requested.
  const grant = new provider.Grant({ accountId: sub, clientId: params.client_id });
  if (params.scope) grant.addOIDCScope(String(params.scope));
  if (prompt.details?.missingOIDCScope) grant.addOIDCScope(prompt.details.missingOIDCScope.join(' '));
  if (prompt.details?.missingOIDCClaims) grant.addOIDCClaims(prompt.details.missingOIDCClaims);
  const grantId = await grant.save();

  // Signing in as someone else than the provider session's account: oidc-provider would answer
  // the resume with an auto-submitting HTML logout form. A scripted client cannot follow that,
  // so end the old session here and unbind the interaction from it; the resume then starts a
  // fresh session for the new account.
  if (details.session?.accountId && details.session.accountId !== sub) {
    const old = details.session.uid ? await provider.Session.findByUid(details.session.uid) : undefined;
    delete details.session;
    await details.save(details.exp - Math.floor(Date.now() / 1000));
    if (old) await old.destroy();
  }

  const result = { login: { accountId: sub }, consent: { grantId } };
  await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: false });
  return { sub };
}

async function abortInteraction(req, res, uid, body) {
  await interactionFor(req, res, uid);
  await provider.interactionFinished(req, res, {
    error: body.error ?? 'access_denied',
    error_description: body.error_description ?? 'End-User aborted interaction',
  }, { mergeWithLastSubmission: false });
}

async function rotate(body) {
  const keep = body.keep_old !== false;
  previousKeys = keep ? currentKeys : [];
  currentKeys = newGeneration();
  provider = buildProvider();
  providerHandler = provider.callback();
  return {
    kid: currentKeys[0].kid,
    kids: Object.fromEntries(currentKeys.map((key) => [key.alg, key.kid])),
    jwks_kids: [...currentKeys, ...previousKeys].map((key) => key.kid),
  };
}

async function route(req, res, url) {
  const path = url.pathname;
  let m;
  if ((m = /^\/interaction\/([^/]+)$/.exec(path)) && req.method === 'GET') {
    const details = await interactionFor(req, res, m[1]);
    sendJson(res, 200, {
      uid: details.uid,
      prompt: details.prompt.name,
      reasons: details.prompt.reasons,
      client_id: details.params.client_id,
      scope: details.params.scope,
      redirect_uri: details.params.redirect_uri,
      session_account: details.session?.accountId ?? null,
    });
    return true;
  }
  if ((m = /^\/interaction\/([^/]+)\/login$/.exec(path)) && req.method === 'POST') {
    await finishLogin(req, res, m[1], await readBody(req));
    return true;
  }
  if ((m = /^\/interaction\/([^/]+)\/abort$/.exec(path)) && req.method === 'POST') {
    await abortInteraction(req, res, m[1], await readBody(req));
    return true;
  }
  if (path === '/test/clients' && req.method === 'POST') {
    sendJson(res, 201, await registerClient(await readBody(req)));
    return true;
  }
  if (path === '/test/tamper' && req.method === 'POST') {
    const body = await readBody(req);
    const slot = typeof body.client_id === 'string' && body.client_id ? body.client_id : '*';
    if (body.mode === null || body.mode === 'off') {
      tampers.delete(slot);
    } else if (TAMPER_MODES.has(body.mode)) {
      tampers.set(slot, { mode: body.mode, value: typeof body.value === 'string' ? body.value : undefined });
    } else {
      sendJson(res, 400, { error: 'invalid_request', error_description: `mode must be one of ${[...TAMPER_MODES].join(', ')}, or "off"` });
      return true;
    }
    sendJson(res, 200, { mode: tampers.get(slot)?.mode ?? null, client_id: slot === '*' ? null : slot });
    return true;
  }
  if (path === '/test/rotate' && req.method === 'POST') {
    sendJson(res, 200, await rotate(await readBody(req)));
    return true;
  }
  return false;
}

const server = http.createServer(async (req, res) => {
  const started = Date.now();
  res.on('finish', () => {
    log(req.method, req.url.split('?')[0], res.statusCode, `${Date.now() - started}ms`);
  });
  try {
    const url = new URL(req.url, 'http://127.0.0.1');
    if (await route(req, res, url)) return;
    if (!providerHandler) {
      sendJson(res, 503, { error: 'temporarily_unavailable', error_description: 'starting' });
      return;
    }
    providerHandler(req, res);
  } catch (err) {
    if (res.headersSent) {
      log('error after headers sent', err?.stack ?? err);
      res.destroy();
      return;
    }
    const status = err.status ?? err.statusCode ?? 500;
    if (status >= 500) log('error', err?.stack ?? err);
    sendJson(res, status, oidcErrorBody(err));
  }
});

server.listen(requestedPort, HOST, async () => {
  const { port } = server.address();
  issuer = `http://${HOST}:${port}`;
  provider = buildProvider();
  providerHandler = provider.callback();
  let initial;
  try {
    initial = JSON.parse(process.env.OIDC_CLIENTS || '[]');
    if (!Array.isArray(initial)) throw new Error('OIDC_CLIENTS must be a JSON array');
    for (const client of initial) await registerClient(client);
  } catch (err) {
    log(`bad OIDC_CLIENTS: ${err.error_description ?? err.message}`);
    process.exit(2);
  }
  process.stdout.write(`ready ${issuer}\n`);
});

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    server.close();
    server.closeAllConnections();
    process.exit(0);
  });
}
