-- The accounts table. `login` is the old sign-in name, replaced by `email` (dropped by V3, a contract migration).
CREATE TABLE users (
    id bigserial PRIMARY KEY,
    login text,
    email text,
    created_at timestamptz NOT NULL DEFAULT now()
);
