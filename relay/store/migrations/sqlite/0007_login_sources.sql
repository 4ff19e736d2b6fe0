-- The addresses each user logged in from (the newest few). Failed log-ins
-- from one of them count toward the account's lockout; failures from
-- anywhere else only slow that source down, so a stranger who knows a
-- user name cannot keep its owner locked out.
CREATE TABLE login_sources (
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    source TEXT NOT NULL,
    last_login INTEGER NOT NULL,
    PRIMARY KEY (user_id, source)
);
