-- Token revocation (service "user"): access tokens carry the account's token generation; a
-- password change, a disabled account or a changed role set raises it, and every node refuses
-- tokens of an older generation from then on. `tokens_revoked_at` (ms since the epoch, 0 =
-- never) is what the nodes poll for.
ALTER TABLE service_user_master ADD COLUMN token_generation INTEGER NOT NULL DEFAULT 0;
ALTER TABLE service_user_master ADD COLUMN tokens_revoked_at INTEGER NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS service_user_master_revoked_idx ON service_user_master (tokens_revoked_at);
