-- tollgate schema, version 1.
-- Money is INTEGER micro-USD (*_micros). Times are INTEGER Unix milliseconds
-- UTC (*_ms). Every table is STRICT; foreign keys are enforced (the ledger
-- turns them on for every connection).
-- credit_transactions and usage_events are append-only: the ledger never
-- updates or deletes their rows (corrections are new rows).

CREATE TABLE tiers (
  id                            TEXT PRIMARY KEY,
  name                          TEXT NOT NULL,
  price_micros                  INTEGER NOT NULL CHECK (price_micros >= 0),
  monthly_credits_micros        INTEGER NOT NULL CHECK (monthly_credits_micros >= 0),
  models                        TEXT NOT NULL CHECK (models IN ('free', 'all')),
  markup_paid_bps               INTEGER NOT NULL CHECK (markup_paid_bps >= 0),
  markup_free_micros_per_token  INTEGER NOT NULL CHECK (markup_free_micros_per_token >= 0),
  byok_available                INTEGER NOT NULL CHECK (byok_available IN (0, 1)),
  rollover_percent              INTEGER NOT NULL CHECK (rollover_percent BETWEEN 0 AND 100),
  default_overage_limit_micros  INTEGER NOT NULL CHECK (default_overage_limit_micros >= 0),
  sort_order                    INTEGER NOT NULL
) STRICT;

-- SPEC section 3 defaults; admins may edit these rows.
INSERT INTO tiers VALUES
  ('free',         'Free',         0,          10000000,  'free', 0,    1, 0, 0,   0,         0),
  ('starter',      'Starter',      30000000,   30000000,  'all',  1000, 0, 0, 0,   0,         1),
  ('professional', 'Professional', 50000000,   50000000,  'all',  500,  0, 1, 25,  0,         2),
  ('enterprise',   'Enterprise',   99000000,   100000000, 'all',  0,    0, 1, 100, 100000000, 3);

CREATE TABLE users (
  id            INTEGER PRIMARY KEY,
  email         TEXT NOT NULL UNIQUE,
  name          TEXT NOT NULL DEFAULT '',
  status        TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended', 'deleted')),
  created_at_ms INTEGER NOT NULL
) STRICT;

CREATE TABLE api_keys (
  id              INTEGER PRIMARY KEY,
  user_id         INTEGER NOT NULL REFERENCES users(id),
  key_hash        BLOB NOT NULL UNIQUE,   -- keyed BLAKE2b of the secret; the secret is never stored
  key_prefix      TEXT NOT NULL,          -- first characters, to recognise a key in lists
  name            TEXT NOT NULL DEFAULT '',
  kind            TEXT NOT NULL DEFAULT 'user' CHECK (kind IN ('user', 'service')),
  scopes          TEXT NOT NULL DEFAULT '',
  rpm_limit       INTEGER NOT NULL DEFAULT 600 CHECK (rpm_limit > 0),
  created_at_ms   INTEGER NOT NULL,
  revoked_at_ms   INTEGER
) STRICT;
CREATE INDEX api_keys_by_user ON api_keys(user_id);

CREATE TABLE subscriptions (
  user_id             INTEGER PRIMARY KEY REFERENCES users(id),
  tier                TEXT NOT NULL REFERENCES tiers(id),
  option              TEXT NOT NULL DEFAULT 'credits' CHECK (option IN ('credits', 'byok')),
  anchor_ms           INTEGER NOT NULL,   -- its UTC day of month and time of day define every boundary
  period_start_ms     INTEGER NOT NULL,
  period_end_ms       INTEGER NOT NULL,
  pending_tier        TEXT REFERENCES tiers(id),
  discount_percent    INTEGER NOT NULL DEFAULT 0 CHECK (discount_percent BETWEEN 0 AND 100),
  discount_periods_left INTEGER NOT NULL DEFAULT 0 CHECK (discount_periods_left >= 0),
  CHECK (period_start_ms < period_end_ms)
) STRICT;
CREATE INDEX subscriptions_by_period_end ON subscriptions(period_end_ms);

-- Cached per-user figures; check_ledger proves them against the history.
CREATE TABLE user_credits (
  user_id               INTEGER PRIMARY KEY REFERENCES users(id),
  balance_micros        INTEGER NOT NULL,   -- remaining grants minus debt
  reserved_micros       INTEGER NOT NULL CHECK (reserved_micros >= 0),
  debt_micros           INTEGER NOT NULL CHECK (debt_micros >= 0),   -- the overage used
  overage_limit_micros  INTEGER NOT NULL CHECK (overage_limit_micros >= 0)
) STRICT;

CREATE TABLE credit_grants (
  id                 INTEGER PRIMARY KEY,
  user_id            INTEGER NOT NULL REFERENCES users(id),
  kind               TEXT NOT NULL CHECK (kind IN ('refund', 'bonus', 'allocated', 'purchased')),
  amount_micros      INTEGER NOT NULL CHECK (amount_micros > 0),
  remaining_micros   INTEGER NOT NULL CHECK (remaining_micros >= 0 AND remaining_micros <= amount_micros),
  priority           INTEGER NOT NULL,
  effective_at_ms    INTEGER NOT NULL,
  expires_at_ms      INTEGER,            -- NULL: never expires
  source             TEXT NOT NULL,      -- admin, coupon:<code>, period, rollover, refund, ...
  refund_of_event_id INTEGER REFERENCES usage_events(id),  -- refund grants: the charge they correct
  created_at_ms      INTEGER NOT NULL
) STRICT;
CREATE INDEX credit_grants_by_user ON credit_grants(user_id);
CREATE INDEX credit_grants_by_refunded_event ON credit_grants(refund_of_event_id) WHERE refund_of_event_id IS NOT NULL;

-- amount_micros is the effect on the balance, debt_delta_micros the effect on
-- the debt; a row's effect on its grant is their sum. So a charge beyond the
-- grants is (-x, +x, no grant) and a grant paying debt is (0, -x, grant).
CREATE TABLE credit_transactions (
  id                    INTEGER PRIMARY KEY,
  user_id               INTEGER NOT NULL REFERENCES users(id),
  type                  TEXT NOT NULL CHECK (type IN ('grant', 'charge', 'deduct', 'expire', 'refund', 'reconcile', 'debt')),
  amount_micros         INTEGER NOT NULL,
  debt_delta_micros     INTEGER NOT NULL DEFAULT 0,
  balance_after_micros  INTEGER NOT NULL,
  grant_id              INTEGER REFERENCES credit_grants(id),
  actor                 TEXT NOT NULL,
  reason                TEXT NOT NULL DEFAULT '',
  idempotency_key       TEXT,
  usage_event_id        INTEGER REFERENCES usage_events(id),
  created_at_ms         INTEGER NOT NULL
) STRICT;
CREATE INDEX credit_transactions_by_user_time ON credit_transactions(user_id, created_at_ms, id);
CREATE INDEX credit_transactions_by_user_id ON credit_transactions(user_id, id);
CREATE INDEX credit_transactions_by_event ON credit_transactions(usage_event_id) WHERE usage_event_id IS NOT NULL;

CREATE TABLE reservations (
  id              INTEGER PRIMARY KEY,
  user_id         INTEGER NOT NULL REFERENCES users(id),
  request_id      TEXT NOT NULL,
  amount_micros   INTEGER NOT NULL CHECK (amount_micros > 0),
  state           TEXT NOT NULL CHECK (state IN ('held', 'settled', 'released', 'expired')),
  created_at_ms   INTEGER NOT NULL,
  expires_at_ms   INTEGER NOT NULL,
  closed_at_ms    INTEGER
) STRICT;
CREATE INDEX reservations_held ON reservations(state) WHERE state = 'held';

CREATE TABLE usage_events (
  id                    INTEGER PRIMARY KEY,
  hold_id               INTEGER UNIQUE REFERENCES reservations(id),  -- proxy calls: one event per hold
  event_id              TEXT,               -- external events (track, deduct): unique forever (index below)
  request_id            TEXT NOT NULL,
  user_id               INTEGER NOT NULL REFERENCES users(id),
  key_id                INTEGER REFERENCES api_keys(id),
  service               TEXT NOT NULL,
  upstream              TEXT NOT NULL DEFAULT '',
  model                 TEXT NOT NULL DEFAULT '',
  prompt_tokens         INTEGER NOT NULL DEFAULT 0 CHECK (prompt_tokens >= 0),
  completion_tokens     INTEGER NOT NULL DEFAULT 0 CHECK (completion_tokens >= 0),
  cached_tokens         INTEGER NOT NULL DEFAULT 0 CHECK (cached_tokens >= 0),
  reasoning_tokens      INTEGER NOT NULL DEFAULT 0 CHECK (reasoning_tokens >= 0),
  units                 INTEGER NOT NULL DEFAULT 0 CHECK (units >= 0),
  provider_cost_micros  INTEGER NOT NULL DEFAULT 0,
  markup_micros         INTEGER NOT NULL DEFAULT 0,
  charged_micros        INTEGER NOT NULL CHECK (charged_micros >= 0),
  price_source          TEXT NOT NULL DEFAULT 'catalog' CHECK (price_source IN ('upstream', 'catalog', 'estimated', 'fixed')),
  catalog_hash          TEXT NOT NULL DEFAULT '',
  status                TEXT NOT NULL DEFAULT 'ok',
  latency_ms            INTEGER NOT NULL DEFAULT 0,
  fingerprint           TEXT NOT NULL DEFAULT '',   -- external events: what a replay must match
  created_at_ms         INTEGER NOT NULL
) STRICT;
CREATE INDEX usage_events_by_user_time ON usage_events(user_id, created_at_ms);
CREATE INDEX usage_events_by_request ON usage_events(request_id);
-- Partial: proxy events (no event_id) cost this index nothing.
CREATE UNIQUE INDEX usage_events_by_event_id ON usage_events(event_id) WHERE event_id IS NOT NULL;

CREATE TABLE usage_daily (
  user_id               INTEGER NOT NULL REFERENCES users(id),
  day                   TEXT NOT NULL,   -- YYYY-MM-DD, UTC
  service               TEXT NOT NULL,
  model                 TEXT NOT NULL,
  requests              INTEGER NOT NULL,
  prompt_tokens         INTEGER NOT NULL,
  completion_tokens     INTEGER NOT NULL,
  provider_cost_micros  INTEGER NOT NULL,
  markup_micros         INTEGER NOT NULL,
  charged_micros        INTEGER NOT NULL,
  refunded_micros       INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (user_id, day, service, model)
) STRICT, WITHOUT ROWID;

CREATE TABLE coupon_codes (
  code                 TEXT PRIMARY KEY,   -- upper case, [A-Z0-9_-]{3,32}
  kind                 TEXT NOT NULL CHECK (kind IN ('credit', 'percent_off', 'free_month')),
  amount_micros        INTEGER CHECK (amount_micros > 0),
  credit_expires_days  INTEGER CHECK (credit_expires_days > 0),
  percent_off          INTEGER CHECK (percent_off BETWEEN 1 AND 100),
  duration_months      INTEGER CHECK (duration_months > 0),
  tier                 TEXT REFERENCES tiers(id),
  max_uses             INTEGER CHECK (max_uses > 0),
  per_user_limit       INTEGER NOT NULL DEFAULT 1 CHECK (per_user_limit > 0),
  uses                 INTEGER NOT NULL DEFAULT 0 CHECK (uses >= 0),
  expires_at_ms        INTEGER,
  active               INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
  created_at_ms        INTEGER NOT NULL
) STRICT;

CREATE TABLE coupon_redemptions (
  id              INTEGER PRIMARY KEY,
  code            TEXT NOT NULL REFERENCES coupon_codes(code),
  user_id         INTEGER NOT NULL REFERENCES users(id),
  effect          TEXT NOT NULL,
  grant_id        INTEGER REFERENCES credit_grants(id),
  created_at_ms   INTEGER NOT NULL
) STRICT;
CREATE INDEX coupon_redemptions_by_code_user ON coupon_redemptions(code, user_id);
CREATE INDEX coupon_redemptions_by_user ON coupon_redemptions(user_id);

CREATE TABLE openrouter_accounts (
  user_id            INTEGER PRIMARY KEY REFERENCES users(id),
  label              TEXT NOT NULL,
  key_ciphertext     BLOB,               -- XChaCha20-Poly1305 under the master key, user id as associated data
  key_nonce          BLOB,
  openrouter_key_hash TEXT,              -- OpenRouter's own id of the key
  limit_micros       INTEGER,
  usage_micros       INTEGER NOT NULL DEFAULT 0,
  synced_at_ms       INTEGER,
  status             TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'active', 'disabled', 'deleted', 'byok')),
  created_at_ms      INTEGER NOT NULL
) STRICT;

-- Idempotency-Key records, scoped to the caller; kept at least 7 days.
CREATE TABLE idempotency_keys (
  scope           TEXT NOT NULL,   -- who called: admin, user:<id>, service:<id>
  key             TEXT NOT NULL,
  fingerprint     TEXT NOT NULL,   -- what the request asked, to detect a different body
  result          TEXT NOT NULL,   -- the first answer, replayed verbatim
  created_at_ms   INTEGER NOT NULL,
  PRIMARY KEY (scope, key)
) STRICT, WITHOUT ROWID;
CREATE INDEX idempotency_keys_by_time ON idempotency_keys(created_at_ms);

CREATE TABLE admin_audit (
  id              INTEGER PRIMARY KEY,
  actor           TEXT NOT NULL,
  action          TEXT NOT NULL,
  target          TEXT NOT NULL DEFAULT '',
  detail          TEXT NOT NULL DEFAULT '',
  client_address  TEXT NOT NULL DEFAULT '',
  created_at_ms   INTEGER NOT NULL
) STRICT;
CREATE INDEX admin_audit_by_time ON admin_audit(created_at_ms, id);

-- History is append-only (SPEC 4.5): corrections are new rows.
CREATE TRIGGER credit_transactions_append_only_update BEFORE UPDATE ON credit_transactions
BEGIN SELECT RAISE(ABORT, 'credit_transactions is append-only'); END;
CREATE TRIGGER credit_transactions_append_only_delete BEFORE DELETE ON credit_transactions
BEGIN SELECT RAISE(ABORT, 'credit_transactions is append-only'); END;
CREATE TRIGGER usage_events_append_only_update BEFORE UPDATE ON usage_events
BEGIN SELECT RAISE(ABORT, 'usage_events is append-only'); END;
CREATE TRIGGER usage_events_append_only_delete BEFORE DELETE ON usage_events
BEGIN SELECT RAISE(ABORT, 'usage_events is append-only'); END;
