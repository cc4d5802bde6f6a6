-- Token retention (auth/retention.py) deletes expired refresh tokens in batches: found by
-- "expires_at", and each deleted row sets "parent_id" / "replaced_by_id" to NULL in the rows
-- that point at it (ON DELETE SET NULL), which scans the whole table per deleted row unless
-- those columns are indexed.
-- Create index "ix_refresh_tokens_expires_at" to table: "refresh_tokens"
CREATE INDEX "ix_refresh_tokens_expires_at" ON "refresh_tokens" ("expires_at");
-- Create index "ix_refresh_tokens_parent_id" to table: "refresh_tokens"
CREATE INDEX "ix_refresh_tokens_parent_id" ON "refresh_tokens" ("parent_id");
-- Create index "ix_refresh_tokens_replaced_by_id" to table: "refresh_tokens"
CREATE INDEX "ix_refresh_tokens_replaced_by_id" ON "refresh_tokens" ("replaced_by_id");
