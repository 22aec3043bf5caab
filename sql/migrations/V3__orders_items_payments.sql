-- Orders are range-partitioned by month on created_at: recent months stay hot and small, old months can be detached
-- and archived. A primary key on a partitioned table must contain the partition key, so orders are identified by
-- (tenant_id, id, created_at) and their children carry order_created_at to reference them. Putting tenant_id in every
-- key makes a cross-tenant reference impossible (an item cannot point at another tenant's order or product).
SET LOCAL ROLE dbops_owner;

CREATE TABLE app.orders (
    id          bigint GENERATED ALWAYS AS IDENTITY,
    tenant_id   bigint NOT NULL REFERENCES app.tenants (id),
    user_id     bigint NOT NULL,
    status      text NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'paid', 'shipped', 'cancelled', 'refunded')),
    total       numeric(12, 2) NOT NULL CHECK (total >= 0),
    currency    text NOT NULL DEFAULT 'EUR' CHECK (currency ~ '^[A-Z]{3}$'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT orders_pkey PRIMARY KEY (tenant_id, id, created_at),
    CONSTRAINT orders_user_fkey FOREIGN KEY (tenant_id, user_id) REFERENCES app.users (tenant_id, id)
) PARTITION BY RANGE (created_at);
COMMENT ON TABLE app.orders IS 'One checkout. Partitioned by month on created_at; total is the sum of its items.';
CREATE INDEX orders_tenant_user_idx ON app.orders (tenant_id, user_id);
CREATE INDEX orders_tenant_created_idx ON app.orders (tenant_id, created_at);

CREATE TABLE app.order_items (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id         bigint NOT NULL,
    order_id          bigint NOT NULL,
    order_created_at  timestamptz NOT NULL,
    product_id        bigint NOT NULL,
    quantity          integer NOT NULL CHECK (quantity > 0),
    unit_price        numeric(12, 2) NOT NULL CHECK (unit_price >= 0),
    CONSTRAINT order_items_order_fkey FOREIGN KEY (tenant_id, order_id, order_created_at)
        REFERENCES app.orders (tenant_id, id, created_at) ON DELETE CASCADE,
    CONSTRAINT order_items_product_fkey FOREIGN KEY (tenant_id, product_id) REFERENCES app.products (tenant_id, id)
);
COMMENT ON TABLE app.order_items IS 'A line of an order; unit_price is copied from the product at checkout time.';
CREATE INDEX order_items_order_idx ON app.order_items (tenant_id, order_id, order_created_at);
CREATE INDEX order_items_product_idx ON app.order_items (tenant_id, product_id);

CREATE TABLE app.payments (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id         bigint NOT NULL,
    order_id          bigint NOT NULL,
    order_created_at  timestamptz NOT NULL,
    amount            numeric(12, 2) NOT NULL CHECK (amount > 0),
    method            text NOT NULL CHECK (method IN ('card', 'transfer', 'wallet')),
    status            text NOT NULL CHECK (status IN ('authorized', 'captured', 'refunded', 'failed')),
    created_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT payments_order_fkey FOREIGN KEY (tenant_id, order_id, order_created_at)
        REFERENCES app.orders (tenant_id, id, created_at)
);
COMMENT ON TABLE app.payments IS 'Money received for an order. Sensitive (audited).';
CREATE INDEX payments_order_idx ON app.payments (tenant_id, order_id, order_created_at);
