// A real OpenID Connect provider (npm oidc-provider) on loopback for the
// relay's single-sign-on tests (tests/tests/accounts_sso.rs).
//
// Settings come from the environment:
//   OIDC_HOST           loopback address to listen on (default 127.0.0.1)
//   OIDC_PORT           port (default 0: any free one)
//   OIDC_CLIENT_ID      the relay's client id
//   OIDC_CLIENT_SECRET  its secret (client_secret_basic)
//   OIDC_REDIRECT_URI   the relay's /auth/oidc/callback URL
//
// Once listening it prints one line, `READY <issuer>`, on stdout. The log-in
// page is oidc-provider's devInteractions: any password is accepted for the
// accounts below (this is a test double, not an identity store), so a test
// logs in with plain form posts. Consent is implied for the one client.

import http from 'node:http';
import Provider from 'oidc-provider';

const host = process.env.OIDC_HOST || '127.0.0.1';
const port = Number(process.env.OIDC_PORT || 0);
const clientId = process.env.OIDC_CLIENT_ID || 'dwa-relay';
const clientSecret = process.env.OIDC_CLIENT_SECRET || 'dwa-relay-test-secret-0123456789';
const redirectUri = process.env.OIDC_REDIRECT_URI;

if (!/^127\.\d+\.\d+\.\d+$|^::1$|^localhost$/.test(host)) {
  console.error(`OIDC_HOST must be a loopback address, not ${host}`);
  process.exit(2);
}
if (!redirectUri) {
  console.error('OIDC_REDIRECT_URI is required');
  process.exit(2);
}

// Directory users and their groups.
const accounts = {
  alice: { name: 'Alice Tech', email: 'alice@example.test', groups: ['dwa-techs', 'staff'] },
  bob: { name: 'Bob Nobody', email: 'bob@example.test', groups: ['nobody'] },
  carol: { name: 'Carol Viewer', email: 'carol@example.test', groups: ['dwa-viewers', 'dwa-techs-beta'] },
};

const server = http.createServer();
server.listen(port, host, () => {
  const addr = server.address();
  const h = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  const issuer = `http://${h}:${addr.port}`;

  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: clientId,
        client_secret: clientSecret,
        redirect_uris: [redirectUri],
        grant_types: ['authorization_code'],
        response_types: ['code'],
        token_endpoint_auth_method: 'client_secret_basic',
      },
    ],
    // PKCE (S256 only, oidc-provider's default method) for every request.
    pkce: { required: () => true },
    features: { devInteractions: { enabled: true } },
    scopes: ['openid', 'profile', 'email', 'groups'],
    claims: {
      openid: ['sub'],
      profile: ['name', 'preferred_username'],
      email: ['email', 'email_verified'],
      groups: ['groups'],
    },
    // Scope-requested claims go into the ID token too (not only userinfo),
    // as most enterprise providers do for groups.
    conformIdTokenClaims: false,
    cookies: { keys: ['dwa-test-oidc-provider-cookie-key'] },
    async findAccount(_ctx, id) {
      const a = accounts[id];
      if (!a) return undefined;
      return {
        accountId: id,
        async claims() {
          return {
            sub: id,
            preferred_username: id,
            name: a.name,
            email: a.email,
            email_verified: true,
            groups: a.groups,
          };
        },
      };
    },
    // First-party client: grant what it asks for without a consent page.
    async loadExistingGrant(ctx) {
      const grantId =
        ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
      if (grantId) return ctx.oidc.provider.Grant.find(grantId);
      const grant = new ctx.oidc.provider.Grant({
        clientId: ctx.oidc.client.clientId,
        accountId: ctx.oidc.session.accountId,
      });
      grant.addOIDCScope('openid profile email groups');
      await grant.save();
      return grant;
    },
  });
  provider.on('server_error', (_ctx, err) => console.error('server_error', err));
  const cb = provider.callback();
  server.on('request', cb);
  console.log(`READY ${issuer}`);
});

for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => server.close(() => process.exit(0)));
}
