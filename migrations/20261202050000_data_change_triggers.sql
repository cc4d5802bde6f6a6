-- Data changes are recorded by the database (docs/AUDIT_GUIDE.md, "Data changes"): a row
-- trigger on every audited table writes its data_changes row in the same transaction, whatever
-- made the change (the ORM, a bulk statement, an ON DELETE CASCADE, psql). The arguments are
-- each table's policy, computed from the models by backoffice/audit/changes.py (a test keeps
-- them equal): entity type, key columns, masked, bookkeeping (left out of UPDATE records),
-- numeric and timestamp columns (rendered as the app rendered them). The actor and request id
-- come from transaction-local settings the app sets; `backoffice.audit = off` records nothing.
-- SECURITY INVOKER: the writer needs INSERT on data_changes, which the app's role has and no
-- more; the append-only triggers keep refusing UPDATE, DELETE and TRUNCATE.
-- Create "audit_jsonable" function: a row's values as the trail records them (masked,
-- numerics as strings, timestamps in UTC ending in Z)
CREATE OR REPLACE FUNCTION audit_jsonable(
  row_values jsonb, masked text[], decimals text[], timestamps text[]
) RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
  name text;
  instant timestamp;
BEGIN
  IF row_values IS NULL THEN
    RETURN NULL;
  END IF;
  FOREACH name IN ARRAY masked LOOP
    IF row_values ? name THEN
      row_values := jsonb_set(row_values, ARRAY[name], '"***"');
    END IF;
  END LOOP;
  FOREACH name IN ARRAY decimals LOOP
    IF jsonb_typeof(row_values -> name) = 'number' THEN
      row_values := jsonb_set(row_values, ARRAY[name], to_jsonb(row_values ->> name));
    END IF;
  END LOOP;
  FOREACH name IN ARRAY timestamps LOOP
    IF jsonb_typeof(row_values -> name) = 'string' THEN
      instant := (row_values ->> name)::timestamptz AT TIME ZONE 'UTC';
      row_values := jsonb_set(row_values, ARRAY[name], to_jsonb(
        to_char(instant, 'YYYY-MM-DD"T"HH24:MI:SS')
        || CASE WHEN date_trunc('second', instant) = instant THEN ''
                ELSE to_char(instant, '.US') END
        || 'Z'));
    END IF;
  END LOOP;
  RETURN row_values;
END
$$;
-- Create "audit_data_change" function: one data_changes row per changed row
CREATE OR REPLACE FUNCTION audit_data_change() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  key_columns text[] := TG_ARGV[1];
  masked text[] := TG_ARGV[2];
  bookkeeping text[] := TG_ARGV[3];
  decimals text[] := TG_ARGV[4];
  timestamps text[] := TG_ARGV[5];
  old_values jsonb;
  new_values jsonb;
  unchanged text[];
  entity_id text;
  key_column text;
BEGIN
  IF current_setting('backoffice.audit', true) = 'off' THEN
    RETURN NULL;
  END IF;
  IF TG_OP <> 'INSERT' THEN
    old_values := to_jsonb(OLD);
  END IF;
  IF TG_OP <> 'DELETE' THEN
    new_values := to_jsonb(NEW);
  END IF;
  FOREACH key_column IN ARRAY key_columns LOOP
    entity_id := concat_ws('/', entity_id, coalesce(new_values, old_values) ->> key_column);
  END LOOP;
  IF TG_OP = 'UPDATE' THEN
    unchanged := ARRAY(
      SELECT key FROM jsonb_each(new_values)
      WHERE value = old_values -> key OR key = ANY (bookkeeping)
    );
    new_values := new_values - unchanged;
    IF new_values = '{}' THEN
      RETURN NULL;
    END IF;
    old_values := old_values - unchanged;
  END IF;
  INSERT INTO public.data_changes
    (entity_type, entity_id, action, old_values, new_values, actor_user_id, request_id)
  VALUES (
    TG_ARGV[0],
    entity_id,
    lower(TG_OP)::public.data_change_action,
    public.audit_jsonable(old_values, masked, decimals, timestamps),
    public.audit_jsonable(new_values, masked, decimals, timestamps),
    nullif(current_setting('backoffice.actor_user_id', true), '')::integer,
    nullif(current_setting('backoffice.request_id', true), '')
  );
  RETURN NULL;
END
$$;
-- Create trigger "customers_data_changes"
CREATE TRIGGER customers_data_changes AFTER INSERT OR UPDATE OR DELETE ON customers FOR EACH ROW EXECUTE FUNCTION audit_data_change('customer', '{id}', '{}', '{updated_at,version}', '{}', '{created_at,updated_at}');
-- Create trigger "products_data_changes"
CREATE TRIGGER products_data_changes AFTER INSERT OR UPDATE OR DELETE ON products FOR EACH ROW EXECUTE FUNCTION audit_data_change('product', '{id}', '{}', '{updated_at,version}', '{price}', '{created_at,updated_at}');
-- Create trigger "role_grants_data_changes"
CREATE TRIGGER role_grants_data_changes AFTER INSERT OR UPDATE OR DELETE ON role_grants FOR EACH ROW EXECUTE FUNCTION audit_data_change('role_grant', '{role_id,module}', '{}', '{}', '{}', '{}');
-- Create trigger "roles_data_changes"
CREATE TRIGGER roles_data_changes AFTER INSERT OR UPDATE OR DELETE ON roles FOR EACH ROW EXECUTE FUNCTION audit_data_change('role', '{id}', '{}', '{updated_at,version}', '{}', '{created_at,updated_at}');
-- Create trigger "tasks_data_changes"
CREATE TRIGGER tasks_data_changes AFTER INSERT OR UPDATE OR DELETE ON tasks FOR EACH ROW EXECUTE FUNCTION audit_data_change('task', '{id}', '{}', '{updated_at,version}', '{}', '{completed_at,created_at,updated_at}');
-- Create trigger "user_roles_data_changes"
CREATE TRIGGER user_roles_data_changes AFTER INSERT OR UPDATE OR DELETE ON user_roles FOR EACH ROW EXECUTE FUNCTION audit_data_change('user_role', '{user_id,role_id}', '{}', '{}', '{}', '{}');
-- Create trigger "users_data_changes"
CREATE TRIGGER users_data_changes AFTER INSERT OR UPDATE OR DELETE ON users FOR EACH ROW EXECUTE FUNCTION audit_data_change('user', '{id}', '{hashed_password}', '{updated_at,version}', '{}', '{created_at,locked_until,updated_at}');
