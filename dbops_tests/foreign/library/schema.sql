-- A lending library's existing database, as a team would bring it to dbops: its own roles, schema `lending` and
-- tables in `public`, no migration history. Nothing here knows dbops. Dates are relative to today so the daily
-- integrity partitions of "yesterday" always hold rows.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'library_app') THEN
        CREATE ROLE library_app LOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'library_readonly') THEN
        CREATE ROLE library_readonly NOLOGIN;
    END IF;
END $$;

CREATE SCHEMA lending;
CREATE TYPE lending.loan_status AS ENUM ('out', 'returned', 'lost');
CREATE TYPE lending.address AS (street text, city text, postcode text);
CREATE DOMAIN lending.isbn13 AS text CHECK (VALUE ~ '^97[89][0-9]{10}$');

CREATE TABLE public.branches (
    id serial PRIMARY KEY,
    name text NOT NULL UNIQUE,
    location lending.address
);

CREATE TABLE lending.members (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    branch_id integer NOT NULL REFERENCES public.branches (id),
    email text NOT NULL,
    full_name text NOT NULL,
    joined_on date NOT NULL DEFAULT current_date,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT members_email_key UNIQUE (email)
);

CREATE TABLE lending.books (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    isbn lending.isbn13 NOT NULL UNIQUE,
    title text NOT NULL,
    copies integer NOT NULL CHECK (copies >= 0)
);
-- Added later without scanning the old rows, as teams do on big tables.
ALTER TABLE lending.books ADD CONSTRAINT books_title_length CHECK (length(title) <= 200) NOT VALID;

-- Monthly range partitions on the loan date, a DEFAULT partition, and a foreign key from the partitioned table.
CREATE TABLE lending.loans (
    id bigint GENERATED ALWAYS AS IDENTITY,
    loaned_on date NOT NULL,
    member_id bigint NOT NULL REFERENCES lending.members (id),
    book_id bigint NOT NULL REFERENCES lending.books (id),
    status lending.loan_status NOT NULL DEFAULT 'out',
    due_on date NOT NULL,
    PRIMARY KEY (id, loaned_on),
    CONSTRAINT loans_due_after_loan CHECK (due_on >= loaned_on)
) PARTITION BY RANGE (loaned_on);
CREATE INDEX loans_member_idx ON lending.loans (member_id);

DO $$
DECLARE
    first date := date_trunc('month', current_date - 75)::date;
BEGIN
    FOR i IN 0..4 LOOP
        EXECUTE format('CREATE TABLE lending.loans_%s PARTITION OF lending.loans FOR VALUES FROM (%L) TO (%L)',
                       to_char(first + make_interval(months => i), 'YYYY_MM'),
                       first + make_interval(months => i), first + make_interval(months => i + 1));
    END LOOP;
END $$;
CREATE TABLE lending.loans_default PARTITION OF lending.loans DEFAULT;

-- A foreign key onto the partitioned table.
CREATE TABLE lending.loan_events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    loan_id bigint NOT NULL,
    loaned_on date NOT NULL,
    happened_at timestamptz NOT NULL DEFAULT now(),
    kind text NOT NULL CHECK (kind IN ('loaned', 'returned', 'reminded')),
    FOREIGN KEY (loan_id, loaned_on) REFERENCES lending.loans (id, loaned_on)
);

CREATE FUNCTION lending.touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END $$;
CREATE TRIGGER members_touch BEFORE UPDATE ON lending.members
    FOR EACH ROW EXECUTE FUNCTION lending.touch_updated_at();

CREATE FUNCTION lending.record_loan() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO lending.loan_events (loan_id, loaned_on, happened_at, kind)
    VALUES (NEW.id, NEW.loaned_on, NEW.loaned_on::timestamptz, 'loaned');
    RETURN NULL;
END $$;
CREATE TRIGGER loans_record AFTER INSERT ON lending.loans
    FOR EACH ROW EXECUTE FUNCTION lending.record_loan();

-- The application finds its tables by the database's search_path.
DO $$
BEGIN
    EXECUTE format('ALTER DATABASE %I SET search_path = "$user", lending, public', current_database());
END $$;

-- A SECURITY DEFINER function that calls another function of its own schema without qualifying it (it works
-- because the caller's search_path holds `lending`): the classic hardening trap.
CREATE FUNCTION lending.open_loans(p_member bigint) RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT count(*) FROM lending.loans WHERE member_id = p_member AND status = 'out'
$$;
CREATE FUNCTION lending.member_summary(p_member bigint) RETURNS text LANGUAGE plpgsql STABLE SECURITY DEFINER AS $$
BEGIN
    RETURN (SELECT full_name FROM members WHERE id = p_member) || ': ' || open_loans(p_member) || ' open';
END $$;

GRANT USAGE ON SCHEMA lending TO library_app, library_readonly;
GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA lending TO library_app;
GRANT SELECT ON ALL TABLES IN SCHEMA lending TO library_readonly;
GRANT SELECT ON public.branches TO library_app, library_readonly;

-- Seed data: 3 branches, 400 members, 250 books, about 6,000 loans over the last 60 days.
INSERT INTO public.branches (name, location)
SELECT 'Branch ' || i, ROW(i || ' High Street', 'Town ' || i, 'PC' || i)::lending.address
FROM generate_series(1, 3) AS i;
INSERT INTO lending.members (branch_id, email, full_name, joined_on)
SELECT 1 + i % 3, 'member' || i || '@example.org', 'Member ' || i, current_date - 400 + i % 300
FROM generate_series(1, 400) AS i;
INSERT INTO lending.books (isbn, title, copies)
SELECT '978' || lpad(i::text, 10, '0'), 'Book ' || i, 1 + i % 5
FROM generate_series(1, 250) AS i;
INSERT INTO lending.loans (loaned_on, member_id, book_id, status, due_on)
SELECT d, 1 + (i * 7 + n) % 400, 1 + (i * 13 + n) % 250,
       (CASE WHEN d < current_date - 21 THEN 'returned' ELSE 'out' END)::lending.loan_status, d + 21
FROM generate_series(current_date - 60, current_date, interval '1 day') AS g(day)
CROSS JOIN LATERAL (SELECT g.day::date AS d) AS dd
CROSS JOIN generate_series(1, 100) AS i
CROSS JOIN LATERAL (SELECT (current_date - g.day::date) AS n) AS nn;
ANALYZE;
