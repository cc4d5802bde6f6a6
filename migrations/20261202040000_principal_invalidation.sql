-- Each app worker caches the principals of the access tokens it has verified
-- (auth/principal_cache.py) and empties that cache when anything a principal depends on
-- changes: these triggers announce such a change on the channel "backoffice_principals",
-- delivered to every worker of every node at commit (nothing on a rollback). The payload is the
-- table's name; identical notifications of one transaction are delivered once.
-- What auth/repository.py's principal query reads, and only that: a user's id, email, name,
-- flags and token version; their roles' grants; the revoked access tokens; whether the
-- token's session (refresh family) still has a live token. Columns that change on every login
-- (failure count, lock) and a refresh token's rotation (its family stays alive through the
-- replacement inserted with it) announce nothing, or the caches would empty all day.
CREATE OR REPLACE FUNCTION announce_principal_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('backoffice_principals', TG_TABLE_NAME);
  RETURN NULL;
END;
$$;

CREATE TRIGGER users_principal_changed AFTER UPDATE OF email, full_name, is_active, is_superuser, token_version, id ON users FOR EACH ROW
  WHEN (OLD.email IS DISTINCT FROM NEW.email OR OLD.full_name IS DISTINCT FROM NEW.full_name
        OR OLD.is_active IS DISTINCT FROM NEW.is_active OR OLD.is_superuser IS DISTINCT FROM NEW.is_superuser
        OR OLD.token_version IS DISTINCT FROM NEW.token_version OR OLD.id IS DISTINCT FROM NEW.id)
  EXECUTE FUNCTION announce_principal_change();
CREATE TRIGGER users_principal_deleted AFTER DELETE ON users FOR EACH ROW EXECUTE FUNCTION announce_principal_change();
CREATE TRIGGER users_principal_truncated AFTER TRUNCATE ON users FOR EACH STATEMENT EXECUTE FUNCTION announce_principal_change();

-- A role's name is not part of a principal; deleting a role cascades to these two tables.
CREATE TRIGGER user_roles_principal_changed AFTER INSERT OR UPDATE OR DELETE ON user_roles FOR EACH ROW EXECUTE FUNCTION announce_principal_change();
CREATE TRIGGER user_roles_principal_truncated AFTER TRUNCATE ON user_roles FOR EACH STATEMENT EXECUTE FUNCTION announce_principal_change();
CREATE TRIGGER role_grants_principal_changed AFTER INSERT OR UPDATE OR DELETE ON role_grants FOR EACH ROW EXECUTE FUNCTION announce_principal_change();
CREATE TRIGGER role_grants_principal_truncated AFTER TRUNCATE ON role_grants FOR EACH STATEMENT EXECUTE FUNCTION announce_principal_change();

-- Logout. Deleting a revoked token's row (the purge, after it expired) lets no cached token in.
CREATE TRIGGER user_revoked_tokens_principal_changed AFTER INSERT OR UPDATE ON user_revoked_tokens FOR EACH ROW EXECUTE FUNCTION announce_principal_change();

-- A live refresh token revoked other than by its rotation (logout, password change, replay),
-- moved, shortened, or deleted while live. Inserting one keeps every session as it was.
CREATE TRIGGER refresh_tokens_principal_changed AFTER UPDATE ON refresh_tokens FOR EACH ROW
  WHEN (OLD.revoked_at IS NULL AND (
          (NEW.revoked_at IS NOT NULL AND NEW.replaced_by_id IS NULL)
          OR NEW.family_id IS DISTINCT FROM OLD.family_id OR NEW.user_id IS DISTINCT FROM OLD.user_id
          OR NEW.expires_at < OLD.expires_at))
  EXECUTE FUNCTION announce_principal_change();
CREATE TRIGGER refresh_tokens_principal_deleted AFTER DELETE ON refresh_tokens FOR EACH ROW
  WHEN (OLD.revoked_at IS NULL AND OLD.expires_at > now())
  EXECUTE FUNCTION announce_principal_change();
CREATE TRIGGER refresh_tokens_principal_truncated AFTER TRUNCATE ON refresh_tokens FOR EACH STATEMENT EXECUTE FUNCTION announce_principal_change();
