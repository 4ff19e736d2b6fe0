-- Log-in sessions (portal cookie), per-user API tokens, and the TLS
-- certificates seen on devices' HTTPS ports (trust on first use).
CREATE TABLE login_sessions (
    id_hash TEXT PRIMARY KEY,          -- sha256 of the cookie value
    user_id INTEGER NOT NULL REFERENCES users(id),
    created_at TEXT NOT NULL,
    expires_at INTEGER NOT NULL,       -- unix seconds
    ended_at TEXT
);

CREATE TABLE api_tokens (
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id),
    name TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,   -- sha256 of the token
    created_at TEXT NOT NULL,
    revoked_at TEXT
);

CREATE TABLE device_tls (
    device_id INTEGER NOT NULL REFERENCES devices(id),
    port INTEGER NOT NULL,
    cert_sha256 TEXT NOT NULL,
    first_seen TEXT NOT NULL,
    last_seen TEXT NOT NULL,
    PRIMARY KEY (device_id, port)
);

ALTER TABLE users ADD COLUMN last_login TEXT;
