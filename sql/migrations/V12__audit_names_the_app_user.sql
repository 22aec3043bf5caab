-- Audit rows name the application's user, not the pool's role: every connection of a pool logs in as the same
-- role, so session_user says nothing about who acted. The application sets the acting user per transaction
-- (SELECT set_config('app.actor', 'user:42', true), i.e. SET LOCAL app.actor = 'user:42'); the trigger records it in
-- changed_by, and the database role in the new column db_role. Without app.actor (a migration, an operator's psql)
-- changed_by falls back to session_user, as before. Adding a nullable column without a default rewrites nothing.
SET LOCAL ROLE dbops_owner;

ALTER TABLE app.audit_log ADD COLUMN db_role text;
COMMENT ON COLUMN app.audit_log.changed_by IS
    'Who acted: the transaction''s app.actor setting (the application''s user), else the session role.';
COMMENT ON COLUMN app.audit_log.db_role IS 'The database role of the session that made the change (NULL before V12).';

CREATE OR REPLACE FUNCTION app.audit_row() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    old_row jsonb := CASE WHEN TG_OP <> 'INSERT' THEN to_jsonb(OLD) END;
    new_row jsonb := CASE WHEN TG_OP <> 'DELETE' THEN to_jsonb(NEW) END;
    subject jsonb := coalesce(new_row, old_row);
    actor text := coalesce(nullif(current_setting('app.actor', true), ''), session_user);
    changed text[];
BEGIN
    IF TG_OP = 'UPDATE' THEN
        SELECT coalesce(array_agg(n.key ORDER BY n.key), '{}') INTO changed
        FROM jsonb_each(new_row) AS n WHERE n.value IS DISTINCT FROM old_row -> n.key;
        IF changed = '{}' THEN
            RETURN NULL;
        END IF;
    ELSE
        SELECT array_agg(k ORDER BY k) INTO changed FROM jsonb_object_keys(subject) AS k;
    END IF;
    INSERT INTO app.audit_log (tenant_id, table_name, operation, row_id, changed_columns, changed_by, db_role)
    VALUES ((subject ->> 'tenant_id')::bigint, TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME, TG_OP,
            (subject ->> 'id')::bigint, changed, left(actor, 200), session_user);
    RETURN NULL;
END
$$;
