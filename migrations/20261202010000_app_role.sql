-- The application's database role (docs/AUDIT_GUIDE.md, "Database roles"). The owner (who runs
-- the migrations and the archive job) keeps every right; the application connects as a login
-- role that is a member of backoffice_app, which may read and write the business tables but
-- only read and append to the audit tables. Not being their owner, it cannot alter, disable or
-- drop their triggers either, and it has no CREATE on the schema.
--
-- Roles belong to the whole server, not to one database: create the group only if it is
-- missing (another database on the same server may have created it, even at the same moment).
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'backoffice_app') THEN
    CREATE ROLE backoffice_app NOLOGIN;
  END IF;
EXCEPTION
  WHEN duplicate_object OR unique_violation THEN NULL;
END
$$;
-- PostgreSQL 15 and later already refuse CREATE on public to everybody but its owner; older
-- servers grant it to PUBLIC.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO backoffice_app;
-- Business tables: read and write (SELECT ... FOR UPDATE needs UPDATE), never TRUNCATE.
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO backoffice_app;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO backoffice_app;
-- Audit tables: append and read only. The retention job deletes as the owner.
REVOKE ALL ON access_logs, data_changes FROM backoffice_app;
GRANT SELECT, INSERT ON access_logs, data_changes TO backoffice_app;
-- The archive's bookkeeping is written by the archive job alone; the app may read it.
REVOKE ALL ON audit_archive_batches FROM backoffice_app;
GRANT SELECT ON audit_archive_batches TO backoffice_app;
-- Tables and sequences that later migrations create (as this same owner) get the business
-- grants by default; a new audit table must REVOKE UPDATE, DELETE ON it explicitly.
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO backoffice_app;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO backoffice_app;
