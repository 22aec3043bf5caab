-- Least privilege: exactly the grants listed in sql/access-control.yml (a test compares the two).
SET LOCAL ROLE dbops_owner;

GRANT SELECT ON app.tenants TO dbops_app_rw, dbops_app_ro;
GRANT SELECT, INSERT, UPDATE ON app.users, app.products, app.inventory, app.orders, app.payments TO dbops_app_rw;
GRANT SELECT, INSERT, UPDATE, DELETE ON app.order_items TO dbops_app_rw;
GRANT SELECT ON app.daily_sales_v TO dbops_app_rw, dbops_app_ro;

GRANT SELECT ON app.products, app.inventory, app.orders, app.order_items, app.payments TO dbops_app_ro;
-- The read-only role never sees password hashes: column privileges instead of the whole table.
GRANT SELECT (id, tenant_id, email, full_name, created_at) ON app.users TO dbops_app_ro;

GRANT SELECT ON app.audit_log TO dbops_auditor;

GRANT EXECUTE ON FUNCTION app.current_tenant_id() TO dbops_app_rw, dbops_app_ro;
