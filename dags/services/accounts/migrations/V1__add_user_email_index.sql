-- V1__add_user_email_index.sql
BEGIN;

-- Add index concurrently (non-blocking)
CREATE INDEX CONCURRENTLY idx_users_email 
ON users(email);

-- Verify index created
DO $$
BEGIN
  IF NOT EXISTS (
    SELECT 1 FROM pg_indexes 
    WHERE indexname = 'idx_users_email'
  ) THEN
    RAISE EXCEPTION 'Index creation failed';
  END IF;
END $$;

COMMIT;
