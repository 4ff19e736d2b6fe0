-- Directory users (single sign-on, OpenID Connect). `source` says where an
-- account comes from; an 'oidc' account is identified by its provider's
-- (issuer, subject) pair, never by its user name, and has no usable
-- password (its password_hash is not a PHC string, so no password matches).
ALTER TABLE users ADD COLUMN source TEXT NOT NULL DEFAULT 'local'
    CHECK (source IN ('local', 'oidc'));
ALTER TABLE users ADD COLUMN oidc_issuer TEXT;
ALTER TABLE users ADD COLUMN oidc_subject TEXT;
CREATE UNIQUE INDEX users_oidc_identity ON users (oidc_issuer, oidc_subject)
    WHERE oidc_issuer IS NOT NULL;
