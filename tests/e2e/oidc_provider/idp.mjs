// panva's oidc-provider as a third-party IdP for the end-to-end tests, on 127.0.0.1 only.
// Usage: node idp.mjs <config.json>   (tests/e2e/oidc_idp.py writes the file; it holds private keys and
// client secrets, so it is passed by path, never on the command line).
//
// Config keys:
//   issuer            "http://127.0.0.1:<port>": the provider listens on that port
//   admin_port        a second loopback port for test controls: POST /jwks/ok|fail|hang
//   jwks              {"keys": [private JWKs]}: the signing keys (the tests made them, so they can forge)
//   clients           [{client_id, client_secret, scope}]: client_secret_basic clients
//   introspectors     [client_id, ...]: the clients allowed to introspect any token (resource servers)
//   resources         {"<resource indicator>": {scope, format: "opaque"|"jwt", ttl}}: access tokens get
//                     aud = the indicator; "jwt" tokens are signed RS256 with the first RSA key
//   default_resource  the resource for token requests that name none
//   dpop_nonce        true: the token endpoint demands a DPoP nonce (use_dpop_nonce, RFC 9449 section 8)
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';

import { Provider, errors } from 'oidc-provider';

const HANG_LIMIT_MS = 60_000; // a hanging JWKS answers 503 after this, so no socket stays open for ever

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const issuerUrl = new URL(config.issuer);
const introspectors = new Set(config.introspectors ?? []);
const resources = config.resources ?? {};
// Every scope a client or a resource server names must be one the provider supports.
const scopes = new Set(['openid']);
for (const { scope } of [...config.clients, ...Object.values(resources)]) {
  for (const value of (scope ?? '').split(' ').filter(Boolean)) scopes.add(value);
}
const state = { jwks: 'ok' }; // ok: served; fail: 503; hang: no answer for HANG_LIMIT_MS

const provider = new Provider(config.issuer, {
  jwks: config.jwks,
  clients: config.clients.map((client) => ({
    client_id: client.client_id,
    client_secret: client.client_secret,
    ...(client.scope ? { scope: client.scope } : {}),
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    token_endpoint_auth_method: 'client_secret_basic',
  })),
  cookies: { keys: [randomBytes(32).toString('base64url')] },
  scopes: [...scopes],
  ttl: { ClientCredentials: 600 },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    revocation: {
      enabled: true,
      // A client revokes its own tokens (RFC 7009 section 2.1).
      allowedPolicy: async (ctx, client, token) => token.clientId === client.clientId,
    },
    introspection: {
      enabled: true,
      // A resource server may introspect every token; a client only its own.
      allowedPolicy: async (ctx, client, token) => introspectors.has(client.clientId) || token.clientId === client.clientId,
    },
    resourceIndicators: {
      enabled: true,
      defaultResource: async (ctx, client, oneOf) => oneOf ?? config.default_resource,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (ctx, indicator) => {
        const resource = resources[indicator];
        if (!resource) throw new errors.InvalidTarget();
        return {
          scope: resource.scope,
          audience: indicator,
          accessTokenTTL: resource.ttl ?? 600,
          accessTokenFormat: resource.format ?? 'opaque',
          ...(resource.format === 'jwt' ? { jwt: { sign: { alg: 'RS256' } } } : {}),
        };
      },
    },
    dPoP: {
      enabled: true,
      nonceSecret: randomBytes(32),
      requireNonce: () => Boolean(config.dpop_nonce),
    },
  },
});

// Test control: the JWKS endpoint answers, fails or hangs, as the admin port says.
provider.use(async (ctx, next) => {
  if (ctx.path === '/jwks' && state.jwks !== 'ok') {
    if (state.jwks === 'hang') await new Promise((resolve) => setTimeout(resolve, HANG_LIMIT_MS));
    ctx.status = 503;
    ctx.body = { error: 'temporarily_unavailable' };
    return;
  }
  await next();
  // One line per request: method, path and status; never a header or body (tokens live there).
  console.log(`${ctx.method} ${ctx.path} ${ctx.status}`);
});

provider.listen(Number(issuerUrl.port), '127.0.0.1');

createServer((req, res) => {
  const match = /^\/jwks\/(ok|fail|hang)$/.exec(req.url ?? '');
  if (req.method !== 'POST' || !match) {
    res.writeHead(404).end();
    return;
  }
  state.jwks = match[1];
  res.writeHead(204).end();
}).listen(config.admin_port, '127.0.0.1');

for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => process.exit(0));
