-- The application's three reads as PL/pgSQL functions. Through PgBouncer in transaction pooling (1.18 has no
-- prepared statements) every plain statement is parsed and planned on every call, and on the partitioned app.orders
-- planning costs several times the execution (docs/performance.md). A PL/pgSQL function keeps its statements'
-- plans in the server session for the life of the pooled server connection, so a call is planned once per
-- connection, not once per transaction. SECURITY INVOKER: row-level security and the caller's grants apply exactly
-- as to the plain statements; the partition key bound is kept, so the cached generic plans prune at executor start.
SET LOCAL ROLE dbops_owner;

CREATE FUNCTION app.order_by_id(p_tenant bigint, p_order bigint)
RETURNS TABLE (id bigint, user_id bigint, status text, total numeric, currency text, created_at timestamptz)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN QUERY
    SELECT o.id, o.user_id, o.status, o.total, o.currency, o.created_at
    FROM app.orders AS o
    WHERE o.tenant_id = p_tenant AND o.id = p_order
      AND o.created_at >= now() - interval '62 days' AND o.created_at <= now();
END
$$;
COMMENT ON FUNCTION app.order_by_id(bigint, bigint) IS
    'One order of the last 62 days by id (the read_order workload); plan cached per server session.';

CREATE FUNCTION app.user_recent_orders(p_tenant bigint, p_user bigint, p_limit integer DEFAULT 20)
RETURNS TABLE (id bigint, status text, total numeric, created_at timestamptz)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN QUERY
    SELECT o.id, o.status, o.total, o.created_at
    FROM app.orders AS o
    WHERE o.tenant_id = p_tenant AND o.user_id = p_user
      AND o.created_at >= now() - interval '62 days' AND o.created_at <= now()
    ORDER BY o.created_at DESC
    LIMIT p_limit;
END
$$;
COMMENT ON FUNCTION app.user_recent_orders(bigint, bigint, integer) IS
    'A user''s latest orders of the last 62 days (the read_user_orders workload); plan cached per server session.';

CREATE FUNCTION app.product_page(p_tenant bigint, p_product bigint)
RETURNS TABLE (id bigint, sku text, name text, price numeric, available integer)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN QUERY
    SELECT p.id, p.sku, p.name, p.price, i.quantity - i.reserved
    FROM app.products AS p
    LEFT JOIN app.inventory AS i ON i.tenant_id = p.tenant_id AND i.product_id = p.id
    WHERE p.tenant_id = p_tenant AND p.id = p_product;
END
$$;
COMMENT ON FUNCTION app.product_page(bigint, bigint) IS
    'A product with the stock available to sell (the read_product workload); plan cached per server session.';

REVOKE EXECUTE ON FUNCTION app.order_by_id(bigint, bigint), app.user_recent_orders(bigint, bigint, integer),
    app.product_page(bigint, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app.order_by_id(bigint, bigint), app.user_recent_orders(bigint, bigint, integer),
    app.product_page(bigint, bigint) TO dbops_app_rw, dbops_app_ro;
