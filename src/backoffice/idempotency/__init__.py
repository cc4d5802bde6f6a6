"""Idempotency-Key (draft-ietf-httpapi-idempotency-key-header): safe retries of the writes."""
