-- Grants: everything a user holds, in one table with one lifecycle. A
-- grant is issued under an authority (the user, and for derived grants a
-- parent grant: the log-in or API token a web session was opened with) and
-- ends once, with a reason, when that authority is lost or it expires.
-- Times: unix seconds.
CREATE TABLE grants (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('login', 'api_token', 'web_session', 'tunnel', 'sso_pending')),
    handle TEXT UNIQUE,                -- public id: a web session's or tunnel's
    secret_hash TEXT UNIQUE,           -- sha256 of the cookie, token or state
    user_id INTEGER REFERENCES users(id),
    parent_id INTEGER REFERENCES grants(id),
    customer_id INTEGER,
    device_id INTEGER,
    agent_id TEXT,
    name TEXT,                         -- an API token's name
    restricted INTEGER NOT NULL DEFAULT 0, -- a log-in that may only enroll two-factor
    detail TEXT,                       -- JSON, per kind
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    last_seen INTEGER,
    ended_at INTEGER,
    end_reason TEXT,
    ended_by TEXT
);
CREATE INDEX grants_user ON grants (user_id) WHERE ended_at IS NULL;
CREATE INDEX grants_parent ON grants (parent_id) WHERE ended_at IS NULL;
CREATE INDEX grants_device ON grants (device_id) WHERE ended_at IS NULL;
CREATE INDEX grants_agent ON grants (agent_id) WHERE ended_at IS NULL;
CREATE INDEX grants_customer ON grants (customer_id) WHERE ended_at IS NULL;
CREATE INDEX grants_ended ON grants (ended_at);

-- API tokens keep their ids (the API names them by id).
INSERT INTO grants (id, kind, secret_hash, user_id, name, created_at, ended_at, end_reason, ended_by)
SELECT id, 'api_token', token_hash, user_id, name,
       CAST(strftime('%s', created_at) AS INTEGER),
       CASE WHEN revoked_at IS NULL THEN NULL ELSE CAST(strftime('%s', revoked_at) AS INTEGER) END,
       CASE WHEN revoked_at IS NULL THEN NULL ELSE 'token_revoked' END,
       CASE WHEN revoked_at IS NULL THEN NULL ELSE 'relay' END
FROM api_tokens;

INSERT INTO grants (kind, secret_hash, user_id, restricted, created_at, expires_at, last_seen, ended_at, end_reason, ended_by)
SELECT 'login', id_hash, user_id, restricted,
       CAST(strftime('%s', created_at) AS INTEGER), expires_at, last_seen,
       CASE WHEN ended_at IS NULL THEN NULL ELSE CAST(strftime('%s', ended_at) AS INTEGER) END,
       CASE WHEN ended_at IS NULL THEN NULL ELSE 'logout' END,
       CASE WHEN ended_at IS NULL THEN NULL ELSE 'relay' END
FROM login_sessions;

DROP TABLE api_tokens;
DROP TABLE login_sessions;
