-- Issue #7: a provisioned OpenRouter key per user, and reconciliation of
-- usage billed on an estimate.
--
-- BYOK keys move to their own table: a professional user may hold both
-- their own key (used while their option is byok) and a provisioned key
-- (kept for when they return to credits). openrouter_accounts is left to
-- provisioned keys; its 'byok' status is no longer written.
CREATE TABLE byok_keys (
  user_id         INTEGER PRIMARY KEY REFERENCES users(id),
  key_ciphertext  BLOB NOT NULL,          -- XChaCha20-Poly1305 under the master key, "user:<id>" as associated data
  created_at_ms   INTEGER NOT NULL
) STRICT;
INSERT INTO byok_keys (user_id, key_ciphertext, created_at_ms)
  SELECT user_id, key_ciphertext, created_at_ms FROM openrouter_accounts
  WHERE status = 'byok' AND key_ciphertext IS NOT NULL;
DELETE FROM openrouter_accounts WHERE status = 'byok';

-- Provisioning state: a user created while OpenRouter was unreachable is
-- 'pending' and retried with backoff; the masked key is what the API shows.
ALTER TABLE openrouter_accounts ADD COLUMN key_masked TEXT NOT NULL DEFAULT '';
ALTER TABLE openrouter_accounts ADD COLUMN last_error TEXT NOT NULL DEFAULT '';
ALTER TABLE openrouter_accounts ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0);
ALTER TABLE openrouter_accounts ADD COLUMN next_attempt_ms INTEGER;
-- OpenRouter's limit_remaining: the limit resets monthly, so limit - usage
-- (all-time) is not what is left.
ALTER TABLE openrouter_accounts ADD COLUMN remaining_micros INTEGER;

-- The upstream's id of a call (OpenRouter's X-Generation-Id), kept so a
-- call billed on an estimate can be priced again from /generation.
ALTER TABLE usage_events ADD COLUMN generation_id TEXT;
CREATE INDEX usage_events_to_reconcile ON usage_events(created_at_ms)
  WHERE price_source = 'estimated' AND generation_id IS NOT NULL;

-- One correction per usage event. The event keeps what was billed at the
-- time (history is never edited); the correction is `delta_micros` more
-- (or less, when negative) charged, posted as 'reconcile' transactions
-- linked to the event.
CREATE TABLE reconciliations (
  id                    INTEGER PRIMARY KEY,
  usage_event_id        INTEGER NOT NULL UNIQUE REFERENCES usage_events(id),
  user_id               INTEGER NOT NULL REFERENCES users(id),
  generation_id         TEXT NOT NULL,
  provider_cost_micros  INTEGER NOT NULL CHECK (provider_cost_micros >= 0),  -- what the upstream reports
  charged_micros        INTEGER NOT NULL CHECK (charged_micros >= 0),        -- what it should have cost the user
  delta_micros          INTEGER NOT NULL,                                    -- charged_micros - the event's charge
  prompt_tokens         INTEGER NOT NULL DEFAULT 0 CHECK (prompt_tokens >= 0),
  completion_tokens     INTEGER NOT NULL DEFAULT 0 CHECK (completion_tokens >= 0),
  created_at_ms         INTEGER NOT NULL
) STRICT;
CREATE INDEX reconciliations_by_user ON reconciliations(user_id);
