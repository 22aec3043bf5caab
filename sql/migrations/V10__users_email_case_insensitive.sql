-- dbops:no-transaction
-- E-mail addresses are unique per tenant whatever their case: 'A@x' and 'a@x' are one person. A unique index on
-- (tenant_id, lower(email)) rather than the citext type: citext is an extension (CREATE EXTENSION needs more than
-- the owner role has on many hosts), changing the column's type rewrites the table under ACCESS EXCLUSIVE, and every
-- comparison would pay citext's case folding; the index is built CONCURRENTLY (no write is blocked) and lookups use
-- lower(email) = lower($1). The case-sensitive constraint users_tenant_email_key of V2 stays: it is implied by the
-- new index, but clients may name it (ON CONFLICT ON CONSTRAINT) and integrity checks derive a rule from it, which
-- they do not from an expression index.
-- No transaction (CREATE INDEX CONCURRENTLY): if existing rows differ only by case the build fails and leaves an
-- INVALID index; fix the rows, DROP INDEX app.users_tenant_lower_email_key, and run again.
SET ROLE dbops_owner;

SET lock_timeout = '5s';
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS users_tenant_lower_email_key ON app.users (tenant_id, lower(email));
COMMENT ON INDEX app.users_tenant_lower_email_key IS 'One user per e-mail address and tenant, case-insensitively.';
RESET lock_timeout;
