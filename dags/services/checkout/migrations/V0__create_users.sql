-- The table the spec's example (V1) indexes.
CREATE TABLE users (
    id bigserial PRIMARY KEY,
    email text,
    created_at timestamptz NOT NULL DEFAULT now()
);
