-- Read: a product page, with the stock available to sell.
\set t random(1, :tenants)
\set p :tenants * random(0, :products_per_tenant - 1) + :t
\startpipeline
BEGIN;
SELECT set_config('app.tenant_id', :t, true);
SELECT p.id, p.sku, p.name, p.price, i.quantity - i.reserved AS available FROM app.products AS p LEFT JOIN app.inventory AS i ON i.tenant_id = p.tenant_id AND i.product_id = p.id WHERE p.tenant_id = :t AND p.id = :p;
COMMIT;
\endpipeline
