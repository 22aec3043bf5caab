-- Tenant isolation in the database itself: the application sets app.tenant_id per transaction
-- (SET LOCAL app.tenant_id = '42') and sees, inserts and updates only that tenant's rows. With no tenant set it sees
-- nothing (not an error). FORCE keeps the policies in force for any role that owns a table by accident; the
-- owner role itself has BYPASSRLS (see V1) because migrations, maintenance and restores must see every row.
SET LOCAL ROLE dbops_owner;

CREATE FUNCTION app.current_tenant_id() RETURNS bigint
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT nullif(current_setting('app.tenant_id', true), '')::bigint
$$;
COMMENT ON FUNCTION app.current_tenant_id() IS 'The tenant of the current session (SET app.tenant_id), or NULL.';

ALTER TABLE app.tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE app.tenants FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON app.tenants TO dbops_app_rw, dbops_app_ro
    USING (id = app.current_tenant_id());

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['users', 'products', 'inventory', 'orders', 'order_items', 'payments'] LOOP
        EXECUTE format('ALTER TABLE app.%I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE app.%I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON app.%I TO dbops_app_rw, dbops_app_ro '
                       'USING (tenant_id = app.current_tenant_id()) WITH CHECK (tenant_id = app.current_tenant_id())', t);
    END LOOP;
END
$$;

-- The tenant's view of the daily sales (security barrier: the filter runs before any user-supplied predicate).
CREATE VIEW app.daily_sales_v WITH (security_barrier = true) AS
SELECT tenant_id, day, orders, revenue FROM app.daily_sales WHERE tenant_id = app.current_tenant_id();
COMMENT ON VIEW app.daily_sales_v IS 'app.daily_sales restricted to the session''s tenant.';
