-- Startup looks for stream.open records without a later stream.close
-- (a relay killed mid-stream) since the last relay.started record.
CREATE INDEX audit_kind ON audit (kind, id);
