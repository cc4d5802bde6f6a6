-- Idempotency-Key (src/backoffice/idempotency/): one row per key a caller has used, claimed
-- while its request runs, then holding the stored answer until it expires and is purged.
-- The app's role gets SELECT, INSERT, UPDATE, DELETE by default privileges
-- (20261202010000_app_role.sql): the purge and a released claim delete rows.
-- Create "idempotency_keys" table
CREATE TABLE "idempotency_keys" (
  "scope" character varying(160) NOT NULL,
  "key" character varying(255) NOT NULL,
  "fingerprint" bytea NOT NULL,
  "state" character varying(16) NOT NULL,
  "attempt" uuid NOT NULL,
  "lease_until" timestamptz NOT NULL,
  "expires_at" timestamptz NOT NULL,
  "created_at" timestamptz NOT NULL DEFAULT now(),
  "response_status" smallint NULL,
  "response_headers" jsonb NULL,
  "response_body" bytea NULL,
  CONSTRAINT "pk_idempotency_keys" PRIMARY KEY ("scope", "key"),
  CONSTRAINT "ck_idempotency_keys_state" CHECK (state IN ('running', 'applied', 'completed')),
  CONSTRAINT "ck_idempotency_keys_completed_has_answer" CHECK ((state = 'completed') = (response_status IS NOT NULL))
);
-- Create index "ix_idempotency_keys_expires_at" to table: "idempotency_keys"
CREATE INDEX "ix_idempotency_keys_expires_at" ON "idempotency_keys" ("expires_at");
