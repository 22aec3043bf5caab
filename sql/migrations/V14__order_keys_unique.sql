-- (tenant_id, id) identifies an order across the whole table, not only within its month: a unique index of a
-- partitioned table must contain the partition key, so orders_pkey (tenant_id, id, created_at) lets the same id
-- appear twice on different days. app.order_keys (not partitioned) holds one row per order and its primary key is the
-- constraint; a trigger on orders keeps it in step (insert, delete, and an update of the key or its date), so a
-- second order with the same (tenant_id, id) on any day fails with a unique violation on order_keys_pkey.
-- The trigger is SECURITY DEFINER: application roles have no privilege on app.order_keys.
-- A bulk load with session_replication_role = replica skips the trigger and must fill order_keys itself (dbops seed
-- does). Existing orders are copied in (a duplicate already there fails the migration, naming the key).
SET LOCAL ROLE dbops_owner;

CREATE TABLE app.order_keys (
    tenant_id         bigint NOT NULL,
    order_id          bigint NOT NULL,
    order_created_at  timestamptz NOT NULL,
    CONSTRAINT order_keys_pkey PRIMARY KEY (tenant_id, order_id)
);
COMMENT ON TABLE app.order_keys IS
    'One row per order: makes (tenant_id, id) unique across every partition of app.orders; kept by app.sync_order_key().';

INSERT INTO app.order_keys (tenant_id, order_id, order_created_at) SELECT tenant_id, id, created_at FROM app.orders;

CREATE FUNCTION app.sync_order_key() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        DELETE FROM app.order_keys WHERE tenant_id = OLD.tenant_id AND order_id = OLD.id;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO app.order_keys (tenant_id, order_id, order_created_at) VALUES (NEW.tenant_id, NEW.id, NEW.created_at);
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION app.sync_order_key() IS 'Keeps app.order_keys = the (tenant_id, id, created_at) of app.orders.';

-- Like every tenant table: row-level security forced (no application role has a privilege on it anyway).
ALTER TABLE app.order_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE app.order_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON app.order_keys TO dbops_app_rw, dbops_app_ro
    USING (tenant_id = (SELECT app.current_tenant_id())) WITH CHECK (tenant_id = (SELECT app.current_tenant_id()));

CREATE TRIGGER orders_key_unique AFTER INSERT OR DELETE OR UPDATE OF tenant_id, id, created_at ON app.orders
    FOR EACH ROW EXECUTE FUNCTION app.sync_order_key();
