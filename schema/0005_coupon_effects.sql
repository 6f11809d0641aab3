-- What coupons leave on a subscription (SPEC 3). FREEMONTH on a paid tier
-- waives the next period's price (`waive_next_period`, becoming
-- `period_waived` at the boundary); on the free tier it moves the user to a
-- paid tier until `revert_at_ms`, when `revert_tier` takes over again
-- (unless an upgrade came first). A percent_off discount already has
-- `discount_percent` and `discount_periods_left` (0001).
ALTER TABLE subscriptions ADD COLUMN waive_next_period INTEGER NOT NULL DEFAULT 0
  CHECK (waive_next_period BETWEEN 0 AND 1);
ALTER TABLE subscriptions ADD COLUMN period_waived INTEGER NOT NULL DEFAULT 0
  CHECK (period_waived BETWEEN 0 AND 1);
ALTER TABLE subscriptions ADD COLUMN revert_tier TEXT REFERENCES tiers(id);
ALTER TABLE subscriptions ADD COLUMN revert_at_ms INTEGER;
