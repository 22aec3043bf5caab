-- Read: a user's last 20 orders of the last 62 days (the "my orders" page): the partition key prunes the other months
-- and the DEFAULT partition; orders (tenant_id, user_id, created_at DESC) gives each month's rows in order.
\set t random(1, :tenants)
\set u :tenants * random(0, :users_per_tenant - 1) + :t
\startpipeline
BEGIN;
SELECT set_config('app.tenant_id', :t, true);
SELECT id, status, total, created_at FROM app.orders WHERE tenant_id = :t AND user_id = :u AND created_at >= now() - interval '62 days' AND created_at <= now() ORDER BY created_at DESC LIMIT 20;
COMMIT;
\endpipeline
