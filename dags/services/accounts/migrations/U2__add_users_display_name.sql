-- U2__add_users_display_name.sql: undoes V2.
ALTER TABLE users DROP COLUMN display_name;
