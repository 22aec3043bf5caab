-- Read: a product page, with the stock available to sell.
-- The statement is a PL/pgSQL function (V16): its plan is cached per pooled server connection.
\set t random(1, :tenants)
\set p :tenants * random(0, :products_per_tenant - 1) + :t
\startpipeline
BEGIN;
SELECT set_config('app.tenant_id', :t, true);
SELECT * FROM app.product_page(:t, :p);
COMMIT;
\endpipeline
