-- E-mail alerts (issue 13): recipients and a mode per customer and alert
-- rule, and a durable outbox of messages like the webhook's.

-- JSON array of addresses; empty: no e-mail for this rule.
ALTER TABLE alert_rules ADD COLUMN email_to TEXT NOT NULL DEFAULT '[]';
ALTER TABLE alert_rules ADD COLUMN email_mode TEXT NOT NULL DEFAULT 'immediate'
    CHECK (email_mode IN ('immediate', 'digest'));

-- One row per alert change and recipient list. Immediate rows are one
-- message each; digest rows due at one interval's end are sent as one
-- message per (customer, recipients).
CREATE TABLE email_outbox (
    id INTEGER PRIMARY KEY,
    customer_id INTEGER NOT NULL REFERENCES customers(id),
    customer_name TEXT NOT NULL,       -- as at queueing, for a digest's subject
    mode TEXT NOT NULL CHECK (mode IN ('immediate', 'digest')),
    recipients TEXT NOT NULL,          -- JSON array, sorted
    event TEXT NOT NULL,               -- alert.raised | alert.resolved
    subject TEXT NOT NULL,             -- the message's subject when sent alone
    body TEXT NOT NULL,                -- this alert's text
    created_at TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,  -- unix seconds
    delivered_at TEXT,
    failed_at TEXT,
    last_error TEXT
);
CREATE INDEX email_outbox_due ON email_outbox (next_attempt_at) WHERE delivered_at IS NULL AND failed_at IS NULL;
