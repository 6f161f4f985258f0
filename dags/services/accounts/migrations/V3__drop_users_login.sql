-- phase: contract
-- Contract: versions that still read `login` must be retired first (migrate_accounts_contract checks the ledger).
ALTER TABLE users DROP COLUMN login;
