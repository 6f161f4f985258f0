-- U3__drop_users_login.sql: the column comes back empty; restore the backup for its data.
ALTER TABLE users ADD COLUMN login text;
