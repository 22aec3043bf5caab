-- Read: a user's last 20 orders (the "my orders" page).
\set t random(1, :tenants)
\set u :tenants * random(0, :users_per_tenant - 1) + :t
\startpipeline
BEGIN;
SELECT set_config('app.tenant_id', :t, true);
SELECT id, status, total, created_at FROM app.orders WHERE tenant_id = :t AND user_id = :u ORDER BY created_at DESC LIMIT 20;
COMMIT;
\endpipeline
