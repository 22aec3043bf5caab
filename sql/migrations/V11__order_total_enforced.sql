-- orders.total is the sum of the order's lines (quantity * unit_price), enforced at commit. A CHECK cannot look at
-- other rows, so deferred constraint triggers do it: any statement may insert the order before its lines (as the
-- place-order workload does), and the rule is checked once the transaction commits, for every order whose total
-- or lines it touched. Existing rows are verified first: the migration fails, naming an order, if one disagrees.
SET LOCAL ROLE dbops_owner;

DO $$
DECLARE
    bad record;
BEGIN
    SELECT o.tenant_id, o.id, o.total, coalesce(i.items, 0) AS items INTO bad
    FROM app.orders AS o
    LEFT JOIN (SELECT tenant_id, order_id, order_created_at, sum(quantity * unit_price) AS items
               FROM app.order_items GROUP BY tenant_id, order_id, order_created_at) AS i
           ON i.tenant_id = o.tenant_id AND i.order_id = o.id AND i.order_created_at = o.created_at
    WHERE o.total <> coalesce(i.items, 0)
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'order % of tenant % has total % but its lines sum to %', bad.id, bad.tenant_id, bad.total,
            bad.items USING HINT = 'correct the order''s total (or its lines) and migrate again';
    END IF;
END
$$;

-- SECURITY DEFINER (the owner bypasses row-level security) so the sum counts every line, and search_path pinned.
-- TG_ARGV[0] says which table fired: on a partitioned table TG_TABLE_NAME is the partition's name.
CREATE FUNCTION app.check_order_total() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    k_tenant bigint;
    k_order bigint;
    k_created timestamptz;
    order_total numeric;
    items numeric;
    pass integer;
BEGIN
    FOR pass IN 1..2 LOOP
        IF pass = 1 THEN
            IF TG_OP = 'DELETE' THEN
                CONTINUE;
            ELSIF TG_ARGV[0] = 'orders' THEN
                k_tenant := NEW.tenant_id; k_order := NEW.id; k_created := NEW.created_at;
            ELSE
                k_tenant := NEW.tenant_id; k_order := NEW.order_id; k_created := NEW.order_created_at;
            END IF;
        ELSE
            -- The order a line left (DELETE, or an UPDATE moving it to another order).
            IF TG_ARGV[0] = 'orders' OR TG_OP = 'INSERT' THEN
                EXIT;
            END IF;
            IF TG_OP = 'UPDATE' AND (OLD.tenant_id, OLD.order_id, OLD.order_created_at)
                    IS NOT DISTINCT FROM (NEW.tenant_id, NEW.order_id, NEW.order_created_at) THEN
                EXIT;
            END IF;
            k_tenant := OLD.tenant_id; k_order := OLD.order_id; k_created := OLD.order_created_at;
        END IF;
        SELECT o.total INTO order_total FROM app.orders AS o
        WHERE o.tenant_id = k_tenant AND o.id = k_order AND o.created_at = k_created;
        IF NOT FOUND THEN
            CONTINUE;  -- the order itself was deleted (its lines go with it)
        END IF;
        SELECT coalesce(sum(i.quantity * i.unit_price), 0) INTO items FROM app.order_items AS i
        WHERE i.tenant_id = k_tenant AND i.order_id = k_order AND i.order_created_at = k_created;
        IF order_total <> items THEN
            RAISE EXCEPTION 'order % of tenant %: total % is not the sum of its lines (%)',
                k_order, k_tenant, order_total, items
                USING ERRCODE = 'check_violation', CONSTRAINT = 'orders_total_is_sum_of_items',
                      HINT = 'set orders.total to sum(quantity * unit_price) of its order_items in the same transaction';
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION app.check_order_total() IS
    'Deferred constraint trigger: orders.total = sum(order_items.quantity * unit_price), checked at commit.';

CREATE CONSTRAINT TRIGGER orders_total_is_sum_of_items AFTER INSERT OR UPDATE OF total, tenant_id, id, created_at
    ON app.orders DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION app.check_order_total('orders');
CREATE CONSTRAINT TRIGGER order_items_sum_to_order_total AFTER INSERT OR UPDATE OR DELETE
    ON app.order_items DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION app.check_order_total('order_items');
COMMENT ON COLUMN app.orders.total IS 'The sum of the order''s lines (quantity * unit_price); enforced at commit.';
