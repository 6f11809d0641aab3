-- Service tokens (SPEC 6): credentials of other systems (a metering
-- service, a billing system), not of a user, so they live apart from
-- api_keys, whose rows each belong to a user. Stored as keyed hashes, like
-- keys; `scopes` is a space-separated list (meter, billing).
CREATE TABLE service_tokens (
  id              INTEGER PRIMARY KEY,
  token_hash      BLOB NOT NULL UNIQUE,
  token_prefix    TEXT NOT NULL,
  name            TEXT NOT NULL,
  scopes          TEXT NOT NULL,
  created_at_ms   INTEGER NOT NULL,
  revoked_at_ms   INTEGER
) STRICT;
