-- Accounts: two-factor (TOTP), lockout, inactivity, session idle timeout.
-- Active TOTP secret (base32); one awaiting confirmation; the last accepted
-- time step (a code of that step or older is refused: no replay).
ALTER TABLE users ADD COLUMN totp_secret TEXT;
ALTER TABLE users ADD COLUMN totp_pending TEXT;
ALTER TABLE users ADD COLUMN totp_last_step INTEGER;
-- Consecutive failed log-ins; set when they reach the limit (admin unlocks).
ALTER TABLE users ADD COLUMN failed_logins INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN locked_at TEXT;
-- 0 once deactivated (unused too long, or by an admin).
ALTER TABLE users ADD COLUMN active INTEGER NOT NULL DEFAULT 1;
ALTER TABLE users ADD COLUMN deactivated_at TEXT;
-- Unix seconds of the last log-in (or creation / reactivation); NULL: use created_at.
ALTER TABLE users ADD COLUMN last_active INTEGER;

-- One-time recovery codes: sha256 of the normalised code (128-bit random).
CREATE TABLE recovery_codes (
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id),
    code_hash TEXT NOT NULL UNIQUE,
    used_at TEXT
);

-- Idle timeout: unix seconds of the last request (updated at most once a
-- minute); restricted: a log-in that may only enroll two-factor.
ALTER TABLE login_sessions ADD COLUMN last_seen INTEGER;
ALTER TABLE login_sessions ADD COLUMN restricted INTEGER NOT NULL DEFAULT 0;
