-- Read: one order by its id, as the owning tenant (row-level security through app.tenant_id).
-- One network round trip per transaction: the statements are pipelined (pgbench \startpipeline).
-- Variables from dbops: tenants, orders_per_tenant (seeded ids: order o belongs to tenant 1 + (o - 1) % tenants).
-- The partition key bounds the search to the last 62 days (the seed spans the 60 days before the day it ran), so
-- the planner prunes the other months and the DEFAULT partition at executor start-up.
-- The statement is a PL/pgSQL function (V16): its plan is cached per pooled server connection.
\set t random(1, :tenants)
\set o :tenants * random(0, :orders_per_tenant - 1) + :t
\startpipeline
BEGIN;
SELECT set_config('app.tenant_id', :t, true);
SELECT * FROM app.order_by_id(:t, :o);
COMMIT;
\endpipeline
