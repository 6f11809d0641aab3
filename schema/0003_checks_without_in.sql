-- The same CHECK constraints, written as OR chains instead of IN lists.
-- SQLite 3.40 checks `x IN ('a', 'b', ...)` by building a temporary B-tree
-- of the list on every statement that writes the table: on the four tables
-- every metered call writes, that was one in eight of the writer's
-- instructions (bench/README.md). The two forms accept exactly the same
-- values, and no row changes, so the definitions are edited in place as
-- SQLite's documentation allows for CHECK constraints ("ALTER TABLE",
-- section "Making other kinds of table schema changes"); the migration runner
-- then bumps schema_version so every connection rereads the schema.
PRAGMA writable_schema = ON;

UPDATE sqlite_schema
SET sql = replace(sql,
    'CHECK (state IN (''held'', ''settled'', ''released'', ''expired''))',
    'CHECK (state = ''held'' OR state = ''settled'' OR state = ''released'' OR state = ''expired'')')
WHERE type = 'table' AND name = 'reservations';

UPDATE sqlite_schema
SET sql = replace(sql,
    'CHECK (kind IN (''refund'', ''bonus'', ''allocated'', ''purchased''))',
    'CHECK (kind = ''refund'' OR kind = ''bonus'' OR kind = ''allocated'' OR kind = ''purchased'')')
WHERE type = 'table' AND name = 'credit_grants';

UPDATE sqlite_schema
SET sql = replace(sql,
    'CHECK (type IN (''grant'', ''charge'', ''deduct'', ''expire'', ''refund'', ''reconcile'', ''debt''))',
    'CHECK (type = ''grant'' OR type = ''charge'' OR type = ''deduct'' OR type = ''expire'' OR type = ''refund'' OR type = ''reconcile'' OR type = ''debt'')')
WHERE type = 'table' AND name = 'credit_transactions';

UPDATE sqlite_schema
SET sql = replace(sql,
    'CHECK (price_source IN (''upstream'', ''catalog'', ''estimated'', ''fixed''))',
    'CHECK (price_source = ''upstream'' OR price_source = ''catalog'' OR price_source = ''estimated'' OR price_source = ''fixed'')')
WHERE type = 'table' AND name = 'usage_events';

PRAGMA writable_schema = OFF;
