-- Expand: a nullable column, so the running version keeps working.
ALTER TABLE users ADD COLUMN display_name text;
