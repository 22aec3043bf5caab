-- The one denormalization: daily sales per tenant, precomputed. Dashboards ask for it constantly and summing a
-- month of orders on every page view would cost more than refreshing once in a while. The unique index lets it be
-- refreshed CONCURRENTLY (readers never blocked). Materialized views have no row-level security, so the application
-- reads it only through app.daily_sales_v, which filters by the session's tenant.
SET LOCAL ROLE dbops_owner;

CREATE MATERIALIZED VIEW app.daily_sales AS
SELECT o.tenant_id,
       (o.created_at AT TIME ZONE 'UTC')::date AS day,
       count(*)::bigint AS orders,
       sum(o.total)::numeric(14, 2) AS revenue
FROM app.orders AS o
WHERE o.status IN ('paid', 'shipped')
GROUP BY o.tenant_id, (o.created_at AT TIME ZONE 'UTC')::date
WITH DATA;
COMMENT ON MATERIALIZED VIEW app.daily_sales IS 'Paid and shipped orders per tenant and UTC day; refresh with app.refresh_daily_sales().';
CREATE UNIQUE INDEX daily_sales_tenant_day_key ON app.daily_sales (tenant_id, day);

CREATE FUNCTION app.refresh_daily_sales() RETURNS void
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    REFRESH MATERIALIZED VIEW CONCURRENTLY app.daily_sales;
$$;
COMMENT ON FUNCTION app.refresh_daily_sales() IS 'Refreshes app.daily_sales without blocking readers.';
