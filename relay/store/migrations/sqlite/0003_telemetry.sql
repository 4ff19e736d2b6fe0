-- Telemetry (issue 4): uploaded items, readings, the inventory's identity
-- columns, scan settings per agent, alerts and the webhook outbox.
-- Timestamps: RFC 3339 UTC text, normalised by the relay (sortable);
-- schedule times: unix seconds.

-- Discovered and hand-added devices share `devices`. A hand-added device has
-- no identity until the first reading at its agent + address claims it.
ALTER TABLE devices ADD COLUMN identity TEXT;       -- Identity::key(), strongest seen
ALTER TABLE devices ADD COLUMN mac TEXT;            -- secondary key (serial devices too)
ALTER TABLE devices ADD COLUMN first_seen TEXT;     -- first reading's taken_at
ALTER TABLE devices ADD COLUMN last_seen TEXT;      -- newest reading's taken_at
ALTER TABLE devices ADD COLUMN latest_reading TEXT; -- readings.id of the newest reading
ALTER TABLE devices ADD COLUMN last_scan TEXT;      -- scan id of the newest reading
ALTER TABLE devices ADD COLUMN missed_scans INTEGER NOT NULL DEFAULT 0;
-- Set when another device took this one's address (see architecture.md).
ALTER TABLE devices ADD COLUMN displaced_from TEXT;
CREATE INDEX devices_identity ON devices (identity);
CREATE INDEX devices_mac ON devices (mac);

-- Every uploaded item, by the id the agent chose: uploads are idempotent.
CREATE TABLE telemetry_items (
    id TEXT PRIMARY KEY,
    agent_id TEXT NOT NULL REFERENCES agents(id),
    kind TEXT NOT NULL CHECK (kind IN ('reading', 'scan_done')),
    received_at TEXT NOT NULL
);

CREATE TABLE readings (
    id TEXT PRIMARY KEY REFERENCES telemetry_items(id),
    device_id INTEGER NOT NULL REFERENCES devices(id),
    agent_id TEXT NOT NULL REFERENCES agents(id),
    scan TEXT NOT NULL,
    taken_at TEXT NOT NULL,
    received_at TEXT NOT NULL,
    address TEXT NOT NULL,
    identity TEXT NOT NULL,
    record TEXT NOT NULL               -- DeviceRecord, JSON
);
CREATE INDEX readings_device_taken ON readings (device_id, taken_at);

CREATE TABLE scans (
    id TEXT PRIMARY KEY REFERENCES telemetry_items(id),
    agent_id TEXT NOT NULL REFERENCES agents(id),
    started_at TEXT NOT NULL,
    finished_at TEXT NOT NULL,
    trigger TEXT NOT NULL,
    ranges TEXT NOT NULL,              -- JSON array
    addresses INTEGER NOT NULL,
    found INTEGER NOT NULL,
    received_at TEXT NOT NULL
);
CREATE INDEX scans_agent ON scans (agent_id, finished_at);

-- Scan settings made on the relay (NULL: the agent's own), pushed to the
-- agent after every connect; `applied` is the agent's last ScanApplied.
CREATE TABLE agent_scan_settings (
    agent_id TEXT PRIMARY KEY REFERENCES agents(id),
    ranges TEXT,                       -- JSON array or NULL
    interval_secs INTEGER,
    updated_at TEXT NOT NULL,
    updated_by TEXT NOT NULL,
    applied TEXT,                      -- JSON ScanApplied or NULL
    applied_at TEXT
);

-- Alert rules per customer; a kind without a row uses the default.
CREATE TABLE alert_rules (
    customer_id INTEGER NOT NULL REFERENCES customers(id),
    kind TEXT NOT NULL,
    enabled INTEGER NOT NULL,
    threshold REAL,
    PRIMARY KEY (customer_id, kind)
);

CREATE TABLE alerts (
    id INTEGER PRIMARY KEY,
    device_id INTEGER NOT NULL REFERENCES devices(id),
    customer_id INTEGER NOT NULL REFERENCES customers(id),
    kind TEXT NOT NULL,
    subject TEXT NOT NULL DEFAULT '',  -- e.g. the supply; '' when none
    message TEXT NOT NULL,
    value REAL,
    raised_at TEXT NOT NULL,
    resolved_at TEXT
);
-- One active alert per (device, kind, subject).
CREATE UNIQUE INDEX alerts_active ON alerts (device_id, kind, subject) WHERE resolved_at IS NULL;
CREATE INDEX alerts_customer ON alerts (customer_id, raised_at);

-- Webhook deliveries, durable across restarts.
CREATE TABLE webhook_outbox (
    id INTEGER PRIMARY KEY,
    event TEXT NOT NULL,               -- alert.raised | alert.resolved
    body TEXT NOT NULL,                -- exactly the bytes signed and sent
    created_at TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,  -- unix seconds
    delivered_at TEXT,
    failed_at TEXT,
    last_error TEXT
);
CREATE INDEX webhook_outbox_due ON webhook_outbox (next_attempt_at) WHERE delivered_at IS NULL AND failed_at IS NULL;
