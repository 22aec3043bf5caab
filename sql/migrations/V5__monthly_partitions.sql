-- Monthly partitions for orders and audit_log: three months back, four ahead, and a DEFAULT partition that catches
-- anything outside (it should stay empty; the health checks watch it). A daily maintenance run calls the function
-- again so the months ahead always exist.
SET LOCAL ROLE dbops_owner;

-- SECURITY DEFINER so every partition belongs to dbops_owner whoever runs the maintenance (a superuser's job would
-- otherwise own them); search_path pinned, and EXECUTE is granted to no application role.
CREATE FUNCTION app.ensure_monthly_partitions(from_date date, to_date date) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    parent text;
    month date;
    created integer := 0;
    part text;
BEGIN
    IF from_date > to_date THEN
        RAISE EXCEPTION 'from_date % is after to_date %', from_date, to_date;
    END IF;
    FOREACH parent IN ARRAY ARRAY['orders', 'audit_log'] LOOP
        month := date_trunc('month', from_date)::date;
        WHILE month <= to_date LOOP
            part := format('%s_%s', parent, to_char(month, 'YYYY_MM'));
            IF to_regclass(format('app.%I', part)) IS NULL THEN
                EXECUTE format('CREATE TABLE app.%I PARTITION OF app.%I FOR VALUES FROM (%L) TO (%L)',
                               part, parent, month::timestamptz, (month + interval '1 month')::timestamptz);
                created := created + 1;
            END IF;
            month := (month + interval '1 month')::date;
        END LOOP;
    END LOOP;
    RETURN created;
END
$$;
COMMENT ON FUNCTION app.ensure_monthly_partitions(date, date) IS
    'Creates the missing monthly partitions of app.orders and app.audit_log covering from_date..to_date.';

SELECT app.ensure_monthly_partitions((date_trunc('month', now()) - interval '3 months')::date,
                                     (date_trunc('month', now()) + interval '4 months')::date);
CREATE TABLE app.orders_default PARTITION OF app.orders DEFAULT;
CREATE TABLE app.audit_log_default PARTITION OF app.audit_log DEFAULT;
