-- U1__add_user_email_index.sql: undoes V1.
DROP INDEX CONCURRENTLY IF EXISTS idx_users_email;
