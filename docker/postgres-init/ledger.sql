-- The deployment ledger lives in its own database beside Airflow's metadata database.
CREATE DATABASE deploy_ledger OWNER airflow;
