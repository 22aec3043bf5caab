-- The audit trail: who changed which sensitive row, when, and which columns (never the values: the trail must not
-- become a second copy of password hashes). pgaudit is not part of every build, so triggers write it.
SET LOCAL ROLE dbops_owner;

CREATE TABLE app.audit_log (
    id               bigint GENERATED ALWAYS AS IDENTITY,
    tenant_id        bigint,
    table_name       text NOT NULL,
    operation        text NOT NULL CHECK (operation IN ('INSERT', 'UPDATE', 'DELETE')),
    row_id           bigint,
    changed_columns  text[] NOT NULL DEFAULT '{}',
    changed_by       text NOT NULL DEFAULT session_user,
    occurred_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT audit_log_pkey PRIMARY KEY (id, occurred_at)
) PARTITION BY RANGE (occurred_at);
COMMENT ON TABLE app.audit_log IS
    'Append-only trail of changes to sensitive tables, written by app.audit_row(); no foreign keys so it outlives what it describes.';

-- SECURITY DEFINER so application roles can write the trail through the trigger without any privilege on the
-- table itself; search_path pinned so a caller cannot substitute objects.
CREATE FUNCTION app.audit_row() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    old_row jsonb := CASE WHEN TG_OP <> 'INSERT' THEN to_jsonb(OLD) END;
    new_row jsonb := CASE WHEN TG_OP <> 'DELETE' THEN to_jsonb(NEW) END;
    subject jsonb := coalesce(new_row, old_row);
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
    INSERT INTO app.audit_log (tenant_id, table_name, operation, row_id, changed_columns, changed_by)
    VALUES ((subject ->> 'tenant_id')::bigint, TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME, TG_OP,
            (subject ->> 'id')::bigint, changed, session_user);
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION app.audit_row() IS 'Audit trigger for the tables listed as sensitive in sql/access-control.yml.';

CREATE TRIGGER users_audit AFTER INSERT OR UPDATE OR DELETE ON app.users
    FOR EACH ROW EXECUTE FUNCTION app.audit_row();
CREATE TRIGGER payments_audit AFTER INSERT OR UPDATE OR DELETE ON app.payments
    FOR EACH ROW EXECUTE FUNCTION app.audit_row();
