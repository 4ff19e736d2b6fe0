-- INSERT OR REPLACE resolves a conflict by deleting the old row without
-- firing DELETE triggers: without this, an existing audit record could be
-- rewritten in place by anyone who can run SQL on the file, past
-- audit_no_update and audit_no_delete. An insert whose id exists is
-- refused before the conflict is resolved.
CREATE TRIGGER audit_no_replace BEFORE INSERT ON audit
WHEN EXISTS (SELECT 1 FROM audit WHERE id = NEW.id)
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
