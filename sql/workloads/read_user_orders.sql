-- Read: a user's last 20 orders of the last 62 days (the "my orders" page): the partition key prunes the other months
-- and the DEFAULT partition; orders (tenant_id, user_id, created_at DESC) gives each month's rows in order.
-- The statement is a PL/pgSQL function (V16): its plan is cached per pooled server connection.
\set t random(1, :tenants)
\set u :tenants * random(0, :users_per_tenant - 1) + :t
\startpipeline
BEGIN;
SELECT set_config('app.tenant_id', :t, true);
SELECT * FROM app.user_recent_orders(:t, :u, 20);
COMMIT;
\endpipeline
