-- U0__create_users.sql: undoes V0.
DROP TABLE users;
