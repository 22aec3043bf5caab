-- Write: place an order (order + 2 items + payment; the payment's audit row is written by its trigger) in one
-- transaction, as the tenant. Orders created by the load test carry currency 'XTS' (ISO 4217's code reserved for
-- testing) so the run can delete exactly the rows it created; no seeded row is updated. The acting user is set per
-- transaction (app.actor) so the payment's audit row names them, not the pool's role.
\set t random(1, :tenants)
\set u :tenants * random(0, :users_per_tenant - 1) + :t
\set p1 :tenants * random(0, :products_per_tenant - 1) + :t
\set p2 :tenants * random(0, :products_per_tenant - 1) + :t
\set q1 random(1, 3)
\set q2 random(1, 3)
\startpipeline
BEGIN;
SELECT set_config('app.tenant_id', :t, true), set_config('app.actor', 'user:' || :u, true);
WITH line AS (SELECT p.id AS product_id, l.q AS quantity, p.price FROM (VALUES (:p1::bigint, :q1::int), (:p2::bigint, :q2::int)) AS l (pid, q) JOIN app.products AS p ON p.tenant_id = :t::bigint AND p.id = l.pid), ord AS (INSERT INTO app.orders (tenant_id, user_id, status, total, currency) SELECT :t::bigint, :u::bigint, 'paid', sum(quantity * price), 'XTS' FROM line RETURNING tenant_id, id, created_at, total), item AS (INSERT INTO app.order_items (tenant_id, order_id, order_created_at, product_id, quantity, unit_price) SELECT ord.tenant_id, ord.id, ord.created_at, line.product_id, line.quantity, line.price FROM ord, line) INSERT INTO app.payments (tenant_id, order_id, order_created_at, amount, method, status) SELECT tenant_id, id, created_at, total, 'card', 'captured' FROM ord;
COMMIT;
\endpipeline
