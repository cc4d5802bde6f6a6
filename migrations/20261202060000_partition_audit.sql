-- The audit tables become partitioned by month (docs/AUDIT_GUIDE.md, "Partitions"): RANGE of
-- occurred_at, one partition per calendar month in UTC (<table>_pYYYY_MM), and a DEFAULT
-- partition (<table>_default) for any row no month partition covers, so an insert never fails.
-- Retention then detaches and drops whole months instead of deleting rows.
--
-- Each table is rebuilt with its rows moved across, in this one transaction: the old table is
-- renamed, the partitioned one created, every month of the old rows (and the coming ones) given
-- its partition, the rows copied, the old table dropped. The ids keep rising from where they
-- were: the new sequence starts where the old identity stopped. A partitioned table's primary
-- key must hold its partition key, so it is (id, occurred_at); ids stay unique, as only the
-- sequence hands them out. Every guarantee stays: the app's role may only read and append
-- (through the parent: it has no right at all on a partition), the append-only row triggers are
-- cloned by PostgreSQL onto every partition (later ones too), and each partition gets its own
-- TRUNCATE guard (statement triggers are not cloned).
--
-- The functions that make partitions (backoffice/audit/partitions.py holds the same text):
-- audit_attach_month creates one month's partition, moving the DEFAULT partition's rows of that
-- month into it; audit_ensure_partitions makes this month's and the coming ones', and one for
-- every month the DEFAULT partition holds rows of. Both run as the owner (SECURITY DEFINER,
-- with a fixed search_path); only the second may be called by the app's role.
-- Create "audit_attach_month" and "audit_ensure_partitions" functions
CREATE OR REPLACE FUNCTION audit_attach_month(
  parent text, month timestamp, adopt boolean DEFAULT false
) RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp SET backoffice.audit_retention = 'on' AS $$
DECLARE
  first_day timestamp := date_trunc('month', month);
  lower_bound text := to_char(first_day, 'YYYY-MM-DD HH24:MI:SS') || '+00';
  upper_bound text := to_char(first_day + interval '1 month', 'YYYY-MM-DD HH24:MI:SS') || '+00';
  partition text := format('%s_p%s', parent, to_char(first_day, 'YYYY_MM'));
  bounds text := partition || '_bounds';
  existing regclass;
BEGIN
  IF parent NOT IN ('access_logs', 'data_changes') THEN
    RAISE EXCEPTION 'not a partitioned audit table: %', parent
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  PERFORM pg_advisory_xact_lock(7022629598040911969);
  existing := to_regclass(format('public.%I', partition));
  IF existing IS NOT NULL
     AND (NOT adopt OR (SELECT relispartition FROM pg_class WHERE oid = existing)) THEN
    RETURN false;
  END IF;
  IF existing IS NULL THEN
    EXECUTE format('CREATE TABLE public.%I (LIKE public.%I INCLUDING DEFAULTS)',
                   partition, parent);
  END IF;
  -- The constraint spares ATTACH a scan of the table under a lock on the parent.
  EXECUTE format('ALTER TABLE public.%I ADD CONSTRAINT %I CHECK (occurred_at >= %L AND '
                 'occurred_at < %L)', partition, bounds, lower_bound, upper_bound);
  EXECUTE format('WITH moved AS (DELETE FROM public.%I WHERE occurred_at >= %L AND '
                 'occurred_at < %L RETURNING *) INSERT INTO public.%I SELECT * FROM moved',
                 parent || '_default', lower_bound, upper_bound, partition);
  EXECUTE format('ALTER TABLE public.%I ATTACH PARTITION public.%I FOR VALUES FROM (%L) TO (%L)',
                 parent, partition, lower_bound, upper_bound);
  EXECUTE format('ALTER TABLE public.%I DROP CONSTRAINT %I', partition, bounds);
  EXECUTE format('REVOKE ALL ON public.%I FROM backoffice_app', partition);
  EXECUTE format('CREATE OR REPLACE TRIGGER %I BEFORE TRUNCATE ON public.%I '
                 'FOR EACH STATEMENT EXECUTE FUNCTION public.audit_append_only()',
                 parent || '_no_truncate', partition);
  RETURN true;
END
$$;
CREATE OR REPLACE FUNCTION audit_ensure_partitions(
  months_ahead integer DEFAULT 3
) RETURNS integer LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  this_month timestamp := date_trunc('month', now() AT TIME ZONE 'UTC');
  parent text;
  month timestamp;
  partition regclass;
  created integer := 0;
BEGIN
  IF months_ahead IS NULL OR months_ahead NOT BETWEEN 0 AND 24 THEN
    RAISE EXCEPTION 'months_ahead must be between 0 and 24, not %', months_ahead
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  PERFORM pg_advisory_xact_lock(7022629598040911969);
  FOREACH parent IN ARRAY ARRAY['access_logs', 'data_changes'] LOOP
    FOR month IN EXECUTE format(
      'SELECT generate_series($1, $1 + make_interval(months => $2), interval ''1 month'') '
      'UNION SELECT date_trunc(''month'', occurred_at AT TIME ZONE ''UTC'') FROM public.%I '
      'ORDER BY 1', parent || '_default') USING this_month, months_ahead
    LOOP
      IF public.audit_attach_month(parent, month) THEN
        created := created + 1;
      END IF;
    END LOOP;
    -- A partition made by hand (CREATE TABLE ... PARTITION OF) has the default privileges,
    -- which grant the app's role UPDATE and DELETE, and no TRUNCATE guard: guard it.
    FOR partition IN
      SELECT inh.inhrelid::regclass FROM pg_inherits inh
      WHERE inh.inhparent = to_regclass(format('public.%I', parent))
        AND (has_table_privilege('backoffice_app', inh.inhrelid,
                                 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')
             OR NOT EXISTS (SELECT FROM pg_trigger WHERE tgrelid = inh.inhrelid
                            AND tgname = parent || '_no_truncate'))
    LOOP
      EXECUTE format('REVOKE ALL ON %s FROM backoffice_app', partition);
      EXECUTE format('CREATE OR REPLACE TRIGGER %I BEFORE TRUNCATE ON %s '
                     'FOR EACH STATEMENT EXECUTE FUNCTION public.audit_append_only()',
                     parent || '_no_truncate', partition);
    END LOOP;
  END LOOP;
  RETURN created;
END
$$;
REVOKE EXECUTE ON FUNCTION audit_attach_month(text, timestamp, boolean) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION audit_ensure_partitions(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION audit_ensure_partitions(integer) TO backoffice_app;
-- Rebuild "access_logs": the old table and its objects step aside under other names
ALTER TABLE access_logs RENAME TO access_logs_unpartitioned;
ALTER SEQUENCE access_logs_id_seq RENAME TO access_logs_unpartitioned_id_seq;
ALTER TABLE access_logs_unpartitioned DROP CONSTRAINT pk_access_logs;
-- PostgreSQL 18 names NOT NULL constraints (<table>_<column>_not_null), and the new table's
-- must not be pushed to other names by the old one's
DO $$
DECLARE
  name text;
BEGIN
  FOR name IN SELECT conname FROM pg_constraint
              WHERE conrelid = 'access_logs_unpartitioned'::regclass AND contype = 'n' LOOP
    EXECUTE format('ALTER TABLE access_logs_unpartitioned RENAME CONSTRAINT %I TO %I',
                   name, 'old_' || name);
  END LOOP;
END
$$;
DROP INDEX ix_access_logs_occurred_at;
DROP INDEX ix_access_logs_path_prefix;
DROP INDEX ix_access_logs_request_id;
DROP INDEX ix_access_logs_status_id;
DROP INDEX ix_access_logs_user_id_id;
-- Create "access_logs_id_seq" sequence, continuing the old identity
CREATE SEQUENCE access_logs_id_seq;
SELECT setval('access_logs_id_seq', last_value, is_called) FROM access_logs_unpartitioned_id_seq;
-- Create "access_logs" table, partitioned by month
CREATE TABLE "access_logs" (
  "id" bigint NOT NULL DEFAULT nextval('access_logs_id_seq'::regclass),
  "occurred_at" timestamptz NOT NULL,
  "request_id" character varying(128) NOT NULL,
  "user_id" integer NULL,
  "client_ip" inet NULL,
  "user_agent" character varying(512) NULL,
  "method" character varying(16) NOT NULL,
  "path" character varying(2048) NOT NULL,
  "status" smallint NOT NULL,
  "duration_ms" double precision NOT NULL,
  CONSTRAINT "pk_access_logs" PRIMARY KEY ("id", "occurred_at")
) PARTITION BY RANGE ("occurred_at");
ALTER SEQUENCE access_logs_id_seq OWNED BY access_logs.id;
-- The append-only guards of the parent; the row trigger is cloned onto every partition
CREATE TRIGGER access_logs_append_only BEFORE UPDATE OR DELETE ON access_logs FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER access_logs_no_truncate BEFORE TRUNCATE ON access_logs FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
-- Create "access_logs_default" partition
CREATE TABLE access_logs_default PARTITION OF access_logs DEFAULT;
REVOKE ALL ON access_logs_default FROM backoffice_app;
CREATE TRIGGER access_logs_no_truncate BEFORE TRUNCATE ON access_logs_default FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
-- A partition for every month from the oldest row's to the newest's
SELECT audit_attach_month('access_logs', month)
FROM generate_series(
  (SELECT date_trunc('month', min(occurred_at) AT TIME ZONE 'UTC') FROM access_logs_unpartitioned),
  (SELECT date_trunc('month', max(occurred_at) AT TIME ZONE 'UTC') FROM access_logs_unpartitioned),
  interval '1 month'
) AS month;
-- Move the rows across, then index them (faster than indexing row by row)
INSERT INTO access_logs SELECT * FROM access_logs_unpartitioned;
-- Create index "ix_access_logs_occurred_at" to table: "access_logs"
CREATE INDEX "ix_access_logs_occurred_at" ON "access_logs" ("occurred_at");
-- Create index "ix_access_logs_path_prefix" to table: "access_logs"
CREATE INDEX "ix_access_logs_path_prefix" ON "access_logs" ("path" varchar_pattern_ops);
-- Create index "ix_access_logs_request_id" to table: "access_logs"
CREATE INDEX "ix_access_logs_request_id" ON "access_logs" ("request_id");
-- Create index "ix_access_logs_status_id" to table: "access_logs"
CREATE INDEX "ix_access_logs_status_id" ON "access_logs" ("status", "id");
-- Create index "ix_access_logs_user_id_id" to table: "access_logs"
CREATE INDEX "ix_access_logs_user_id_id" ON "access_logs" ("user_id", "id");
-- The app's role: read and append, through the parent only
REVOKE ALL ON access_logs FROM backoffice_app;
GRANT SELECT, INSERT ON access_logs TO backoffice_app;
GRANT USAGE, SELECT ON SEQUENCE access_logs_id_seq TO backoffice_app;
-- Drop the old table (and its identity sequence)
DROP TABLE access_logs_unpartitioned;
-- Rebuild "data_changes": the old table and its objects step aside under other names
ALTER TABLE data_changes RENAME TO data_changes_unpartitioned;
ALTER SEQUENCE data_changes_id_seq RENAME TO data_changes_unpartitioned_id_seq;
ALTER TABLE data_changes_unpartitioned DROP CONSTRAINT pk_data_changes;
-- PostgreSQL 18 names NOT NULL constraints (<table>_<column>_not_null), and the new table's
-- must not be pushed to other names by the old one's
DO $$
DECLARE
  name text;
BEGIN
  FOR name IN SELECT conname FROM pg_constraint
              WHERE conrelid = 'data_changes_unpartitioned'::regclass AND contype = 'n' LOOP
    EXECUTE format('ALTER TABLE data_changes_unpartitioned RENAME CONSTRAINT %I TO %I',
                   name, 'old_' || name);
  END LOOP;
END
$$;
DROP INDEX ix_data_changes_action_id;
DROP INDEX ix_data_changes_actor_user_id_id;
DROP INDEX ix_data_changes_entity_type_entity_id_id;
DROP INDEX ix_data_changes_occurred_at;
DROP INDEX ix_data_changes_request_id;
-- Create "data_changes_id_seq" sequence, continuing the old identity
CREATE SEQUENCE data_changes_id_seq;
SELECT setval('data_changes_id_seq', last_value, is_called) FROM data_changes_unpartitioned_id_seq;
-- Create "data_changes" table, partitioned by month
CREATE TABLE "data_changes" (
  "id" bigint NOT NULL DEFAULT nextval('data_changes_id_seq'::regclass),
  "occurred_at" timestamptz NOT NULL DEFAULT now(),
  "entity_type" character varying(64) NOT NULL,
  "entity_id" character varying(128) NOT NULL,
  "action" "data_change_action" NOT NULL,
  "old_values" jsonb NULL,
  "new_values" jsonb NULL,
  "actor_user_id" integer NULL,
  "request_id" character varying(128) NULL,
  CONSTRAINT "pk_data_changes" PRIMARY KEY ("id", "occurred_at")
) PARTITION BY RANGE ("occurred_at");
ALTER SEQUENCE data_changes_id_seq OWNED BY data_changes.id;
-- The append-only guards of the parent; the row trigger is cloned onto every partition
CREATE TRIGGER data_changes_append_only BEFORE UPDATE OR DELETE ON data_changes FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER data_changes_no_truncate BEFORE TRUNCATE ON data_changes FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
-- Create "data_changes_default" partition
CREATE TABLE data_changes_default PARTITION OF data_changes DEFAULT;
REVOKE ALL ON data_changes_default FROM backoffice_app;
CREATE TRIGGER data_changes_no_truncate BEFORE TRUNCATE ON data_changes_default FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
-- A partition for every month from the oldest row's to the newest's
SELECT audit_attach_month('data_changes', month)
FROM generate_series(
  (SELECT date_trunc('month', min(occurred_at) AT TIME ZONE 'UTC') FROM data_changes_unpartitioned),
  (SELECT date_trunc('month', max(occurred_at) AT TIME ZONE 'UTC') FROM data_changes_unpartitioned),
  interval '1 month'
) AS month;
-- Move the rows across, then index them (faster than indexing row by row)
INSERT INTO data_changes SELECT * FROM data_changes_unpartitioned;
-- Create index "ix_data_changes_action_id" to table: "data_changes"
CREATE INDEX "ix_data_changes_action_id" ON "data_changes" ("action", "id");
-- Create index "ix_data_changes_actor_user_id_id" to table: "data_changes"
CREATE INDEX "ix_data_changes_actor_user_id_id" ON "data_changes" ("actor_user_id", "id");
-- Create index "ix_data_changes_entity_type_entity_id_id" to table: "data_changes"
CREATE INDEX "ix_data_changes_entity_type_entity_id_id" ON "data_changes" ("entity_type", "entity_id", "id");
-- Create index "ix_data_changes_occurred_at" to table: "data_changes"
CREATE INDEX "ix_data_changes_occurred_at" ON "data_changes" ("occurred_at");
-- Create index "ix_data_changes_request_id" to table: "data_changes"
CREATE INDEX "ix_data_changes_request_id" ON "data_changes" ("request_id");
-- The app's role: read and append, through the parent only
REVOKE ALL ON data_changes FROM backoffice_app;
GRANT SELECT, INSERT ON data_changes TO backoffice_app;
GRANT USAGE, SELECT ON SEQUENCE data_changes_id_seq TO backoffice_app;
-- Drop the old table (and its identity sequence)
DROP TABLE data_changes_unpartitioned;
-- This month's partitions and the coming months'
SELECT audit_ensure_partitions();
