-- Row-level security evaluated once per statement: the policies of V7 call app.current_tenant_id() for every row
-- (a STABLE function is not folded into a constant); written as a scalar subquery, (SELECT app.current_tenant_id())
-- becomes an InitPlan computed once, and its result is compared like a parameter (index scans and partition
-- pruning use it). ALTER POLICY takes a short ACCESS EXCLUSIVE lock per table; nothing is rewritten.
SET LOCAL ROLE dbops_owner;

ALTER POLICY tenant_isolation ON app.tenants USING (id = (SELECT app.current_tenant_id()));

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['users', 'products', 'inventory', 'orders', 'order_items', 'payments'] LOOP
        EXECUTE format('ALTER POLICY tenant_isolation ON app.%I '
                       'USING (tenant_id = (SELECT app.current_tenant_id())) '
                       'WITH CHECK (tenant_id = (SELECT app.current_tenant_id()))', t);
    END LOOP;
END
$$;

CREATE OR REPLACE VIEW app.daily_sales_v WITH (security_barrier = true) AS
SELECT tenant_id, day, orders, revenue FROM app.daily_sales WHERE tenant_id = (SELECT app.current_tenant_id());
