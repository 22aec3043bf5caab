-- Read: one order by its id, as the owning tenant (row-level security through app.tenant_id).
-- One network round trip per transaction: the statements are pipelined (pgbench \startpipeline).
-- Variables from dbops: tenants, orders_per_tenant (seeded ids: order o belongs to tenant 1 + (o - 1) % tenants).
\set t random(1, :tenants)
\set o :tenants * random(0, :orders_per_tenant - 1) + :t
\startpipeline
BEGIN;
SELECT set_config('app.tenant_id', :t, true);
SELECT id, user_id, status, total, currency, created_at FROM app.orders WHERE tenant_id = :t AND id = :o;
COMMIT;
\endpipeline
