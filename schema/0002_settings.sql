-- Server settings that must survive restarts: today the admin token's hash
-- (generated and printed once at first start). Values are opaque bytes; no
-- secret is ever stored in clear here.
CREATE TABLE settings (
    name          TEXT PRIMARY KEY,
    value         BLOB NOT NULL,
    updated_at_ms INTEGER NOT NULL
) STRICT;
