-- Billing meter reports by e-mail (issue 13): one schedule per customer,
-- and the report attached to its e-mail outbox row.

CREATE TABLE billing_schedules (
    customer_id INTEGER PRIMARY KEY REFERENCES customers(id),
    day INTEGER NOT NULL CHECK (day BETWEEN 1 AND 28), -- sent on or after it
    format TEXT NOT NULL CHECK (format IN ('csv', 'xlsx')),
    email_to TEXT NOT NULL,            -- JSON array, sorted
    last_from TEXT,                    -- first day of the last month queued
    updated_at TEXT NOT NULL,
    updated_by TEXT NOT NULL
);

-- An attachment travels with its row: a restart or an SMTP outage keeps
-- the very report that was made.
ALTER TABLE email_outbox ADD COLUMN attachment_name TEXT;
ALTER TABLE email_outbox ADD COLUMN attachment_type TEXT;
ALTER TABLE email_outbox ADD COLUMN attachment BLOB;
