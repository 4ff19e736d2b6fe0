-- A password an administrator issued (user add, a reset) works for one
-- log-in: that log-in may only choose the user's own password.
ALTER TABLE users ADD COLUMN password_change_required INTEGER NOT NULL DEFAULT 0;
