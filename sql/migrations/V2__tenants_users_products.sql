-- Tenants, their users, products and stock. Objects are created as (and owned by) dbops_owner.
SET LOCAL ROLE dbops_owner;

CREATE TABLE app.tenants (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    slug        text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9][a-z0-9-]{1,62}$'),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    plan        text NOT NULL DEFAULT 'standard' CHECK (plan IN ('free', 'standard', 'enterprise')),
    created_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE app.tenants IS 'A customer company of the platform; the unit of data isolation.';

CREATE TABLE app.users (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id      bigint NOT NULL REFERENCES app.tenants (id),
    email          text NOT NULL CHECK (email ~ '^[^@[:space:]]+@[^@[:space:]]+$' AND length(email) <= 254),
    full_name      text NOT NULL CHECK (length(full_name) BETWEEN 1 AND 200),
    password_hash  text NOT NULL CHECK (length(password_hash) >= 20),
    created_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT users_tenant_email_key UNIQUE (tenant_id, email),
    CONSTRAINT users_tenant_id_key UNIQUE (tenant_id, id)
);
COMMENT ON TABLE app.users IS 'People who buy from a tenant. email and password_hash are sensitive (audited).';
COMMENT ON COLUMN app.users.password_hash IS 'A slow salted hash (e.g. scrypt); never a password. Hidden from dbops_app_ro.';

CREATE TABLE app.products (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   bigint NOT NULL REFERENCES app.tenants (id),
    sku         text NOT NULL CHECK (length(sku) BETWEEN 1 AND 64),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    price       numeric(12, 2) NOT NULL CHECK (price >= 0),
    active      boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT products_tenant_sku_key UNIQUE (tenant_id, sku),
    CONSTRAINT products_tenant_id_key UNIQUE (tenant_id, id)
);
COMMENT ON TABLE app.products IS 'What a tenant sells; price in the tenant''s currency.';

CREATE TABLE app.inventory (
    tenant_id   bigint NOT NULL,
    product_id  bigint NOT NULL,
    quantity    integer NOT NULL CHECK (quantity >= 0),
    reserved    integer NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, product_id),
    CONSTRAINT inventory_reserved_within_stock CHECK (reserved <= quantity),
    CONSTRAINT inventory_product_fkey FOREIGN KEY (tenant_id, product_id) REFERENCES app.products (tenant_id, id)
);
COMMENT ON TABLE app.inventory IS 'Stock per product; reserved units are held by unpaid orders.';
