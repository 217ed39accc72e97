-- Functions that existed before pgmoat saw them.
--
-- Every function here is created in the case's setup, directly on the
-- server, as a DBA or an earlier deploy would have: pgmoat never saw its
-- CREATE. The statements through pgmoat only call them, often without
-- seeming to: attribute notation, an overload that wins over a built-in,
-- an operator, a trigger or event trigger, a function replaced by another
-- session after pgmoat looked at it.

-- case: dynamic-execute-of-argument
-- expect: refused
-- why: A maintenance function runs EXECUTE on its argument; the call names the ledger as data.
-- setup:
SET ROLE {{mig}};
CREATE FUNCTION public.maintain(tbl text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('TRUNCATE %s CASCADE', tbl);
END $$;
-- pgmoat:
SELECT maintain('ledger.entries');

-- case: dynamic-execute-of-unprotected-argument
-- expect: allowed
-- why: Twin: the same function truncates the unprotected scratch table.
-- setup:
SET ROLE {{mig}};
CREATE FUNCTION public.maintain(tbl text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('TRUNCATE %s CASCADE', tbl);
END $$;
-- pgmoat:
SELECT maintain('public.scratch');

-- case: sql-function-deletes
-- expect: refused
-- why: A SQL function whose body is DELETE without WHERE.
-- setup:
SET ROLE {{mig}};
CREATE FUNCTION public.purge_entries() RETURNS void LANGUAGE sql AS $$ DELETE FROM ledger.entries $$;
-- pgmoat:
SELECT purge_entries();

-- case: procedure-deletes
-- expect: refused
-- why: CALL of a PL/pgSQL procedure that deletes every order with a WHERE that matches all of them.
-- setup:
SET ROLE {{mig}};
CREATE PROCEDURE public.archive_orders() LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM orders WHERE placed < '2100-01-01';
END $$;
-- pgmoat:
CALL archive_orders();

-- case: procedure-commits
-- expect: refused
-- why: A procedure that commits inside cannot run under a savepoint: CALL must be judged by the body pgmoat reads from the catalog.
-- setup:
SET ROLE {{mig}};
CREATE PROCEDURE public.reset_balances() LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM ledger.balances;
    COMMIT;
END $$;
-- pgmoat:
CALL reset_balances();

-- case: security-definer-ddl
-- expect: refused
-- why: A SECURITY DEFINER function owned by the superuser runs DDL the caller could not.
-- setup:
CREATE FUNCTION public.rotate_nicknames() RETURNS void LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    ALTER TABLE public.accounts DROP COLUMN nickname;
END $$;
-- pgmoat:
SELECT rotate_nicknames();

-- case: attribute-notation
-- expect: refused
-- why: c.settle reads like a column; it is settle(c), a function that deletes the customer's ledger entries, once per customer.
-- setup:
SET ROLE {{mig}};
CREATE FUNCTION public.settle(c customers) RETURNS bigint LANGUAGE sql AS $$
    WITH d AS (DELETE FROM ledger.entries WHERE account_id = c.id RETURNING 1) SELECT count(*) FROM d
$$;
-- pgmoat:
SELECT c.id, c.settle FROM customers c;

-- case: attribute-notation-harmless
-- expect: allowed
-- why: Twin: attribute notation calling a function that reads.
-- setup:
SET ROLE {{mig}};
CREATE FUNCTION public.display_name(c customers) RETURNS text LANGUAGE sql AS $$ SELECT upper(c.name) $$;
-- pgmoat:
SELECT c.id, c.display_name FROM customers c WHERE c.id = 1;

-- case: overload-beats-builtin
-- expect: refused
-- why: public.length(varchar) is an exact match for a varchar column and wins over pg_catalog.length(text) with the default search_path.
-- setup:
SET ROLE {{mig}};
CREATE FUNCTION public.length(varchar) RETURNS int LANGUAGE sql AS $$
    WITH d AS (DELETE FROM ledger.balances RETURNING 1) SELECT pg_catalog.char_length($1)
$$;
-- pgmoat:
SELECT id, length(name) FROM customers WHERE id = 1;

-- case: overload-beats-builtin-harmless
-- expect: allowed
-- why: Twin: the same overload, with a body that only reads.
-- setup:
SET ROLE {{mig}};
CREATE FUNCTION public.length(varchar) RETURNS int LANGUAGE sql AS $$ SELECT pg_catalog.char_length($1) $$;
-- pgmoat:
SELECT id, length(name) FROM customers WHERE id = 1;

-- case: builtin-shadowed-by-search-path
-- expect: refused
-- why: With public before pg_catalog in search_path, lower(text) is public.lower.
-- setup:
SET ROLE {{mig}};
CREATE FUNCTION public.lower(text) RETURNS text LANGUAGE sql AS $$
    WITH d AS (DELETE FROM ledger.entries RETURNING 1) SELECT pg_catalog.lower($1)
$$;
-- pgmoat:
SET search_path = public, pg_catalog;
SELECT lower(email) FROM accounts WHERE id = 1;

-- case: operator-exact-type
-- expect: refused
-- why: An = operator on (varchar, varchar) beats the built-in text = text for a varchar column; the WHERE runs its function.
-- setup:
SET ROLE {{mig}};
CREATE FUNCTION public.varchar_eq(varchar, varchar) RETURNS boolean LANGUAGE sql AS $$
    WITH d AS (DELETE FROM ledger.balances RETURNING 1) SELECT $1::text OPERATOR(pg_catalog.=) $2::text
$$;
CREATE OPERATOR public.= (LEFTARG = varchar, RIGHTARG = varchar, FUNCTION = public.varchar_eq);
-- pgmoat:
SELECT id FROM customers WHERE name = 'customer 7';

-- case: overload-by-argument-type
-- expect: refused
-- why: touch(int) reads, touch(bigint) deletes; accounts.id is bigint.
-- setup:
SET ROLE {{mig}};
CREATE FUNCTION public.touch(int) RETURNS int LANGUAGE sql AS $$ SELECT $1 $$;
CREATE FUNCTION public.touch(bigint) RETURNS bigint LANGUAGE sql AS $$
    WITH d AS (DELETE FROM ledger.entries RETURNING 1) SELECT $1
$$;
-- pgmoat:
SELECT touch(id) FROM accounts WHERE id = 1;

-- case: trigger-on-unprotected-table
-- expect: refused
-- why: An existing trigger on scratch deletes from the ledger; the statement is an INSERT into scratch.
-- setup:
SET ROLE {{mig}};
CREATE FUNCTION public.scratch_sync() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM ledger.entries WHERE account_id > 0;
    RETURN NEW;
END $$;
CREATE TRIGGER scratch_sync AFTER INSERT ON scratch FOR EACH ROW EXECUTE FUNCTION scratch_sync();
-- pgmoat:
INSERT INTO scratch (note) VALUES ('hello');

-- case: event-trigger
-- expect: refused
-- as: migrator
-- why: An existing event trigger deletes the ledger whenever DDL runs; the statement creates an unrelated table.
-- setup:
CREATE FUNCTION public.on_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM ledger.entries;
END $$;
CREATE EVENT TRIGGER on_ddl ON ddl_command_end EXECUTE FUNCTION public.on_ddl();
-- pgmoat:
CREATE TABLE public.innocent (id int);

-- case: event-trigger-harmless
-- expect: allowed
-- why: Twin: an event trigger that writes to scratch.
-- setup:
CREATE FUNCTION public.on_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.scratch (note) VALUES ('ddl ran');
END $$;
CREATE EVENT TRIGGER on_ddl ON ddl_command_end EXECUTE FUNCTION public.on_ddl();
-- pgmoat:
CREATE TABLE public.innocent (id int);

-- case: trigger-created-by-another-session
-- expect: refused
-- flags: known-limit
-- why: After pgmoat's session has looked at scratch, another session gives it a trigger that deletes from the ledger.
-- pgmoat:
SELECT count(*) FROM scratch;
-- direct:
CREATE FUNCTION public.scratch_sync() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM ledger.entries WHERE account_id > 0;
    RETURN NEW;
END $$;
CREATE TRIGGER scratch_sync AFTER INSERT ON scratch FOR EACH ROW EXECUTE FUNCTION scratch_sync();
-- pgmoat:
INSERT INTO scratch (note) VALUES ('hello');

-- case: function-replaced-by-another-session
-- expect: refused
-- flags: known-limit
-- why: The first call reads; another session then replaces the body with a DELETE, and the same call runs it.
-- setup:
SET ROLE {{mig}};
CREATE FUNCTION public.entry_count() RETURNS bigint LANGUAGE sql AS $$ SELECT count(*) FROM ledger.entries $$;
-- pgmoat:
SELECT entry_count();
-- direct:
CREATE OR REPLACE FUNCTION public.entry_count() RETURNS bigint LANGUAGE sql AS $$
    WITH d AS (DELETE FROM ledger.entries RETURNING 1) SELECT count(*) FROM d
$$;
-- pgmoat:
SELECT entry_count();

-- case: function-that-reads
-- expect: allowed
-- why: Twin: calling an existing function that counts, and a procedure that writes to scratch.
-- setup:
SET ROLE {{mig}};
CREATE FUNCTION public.entry_count() RETURNS bigint LANGUAGE sql AS $$ SELECT count(*) FROM ledger.entries $$;
CREATE PROCEDURE public.log_note(n text) LANGUAGE sql AS $$ INSERT INTO scratch (note) VALUES (n) $$;
-- pgmoat:
SELECT entry_count();
CALL log_note('deployed');

-- case: deferred-trigger-fires-at-commit
-- expect: refused
-- why: An existing constraint trigger on scratch, DEFERRABLE INITIALLY DEFERRED, deletes the ledger when the transaction commits, after the INSERT has been judged.
-- setup:
SET ROLE {{mig}};
CREATE FUNCTION public.scratch_settle() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM ledger.entries WHERE account_id > 0;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER scratch_settle AFTER INSERT ON scratch DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION scratch_settle();
-- pgmoat:
BEGIN;
INSERT INTO scratch (note) VALUES ('hello');
COMMIT;

-- case: set-constraints-fires-trigger
-- expect: refused
-- why: SET CONSTRAINTS ALL IMMEDIATE runs the pending deferred trigger: the deletes happen inside a SET statement.
-- setup:
SET ROLE {{mig}};
CREATE FUNCTION public.scratch_settle() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM ledger.entries WHERE account_id > 0;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER scratch_settle AFTER INSERT ON scratch DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION scratch_settle();
-- pgmoat:
BEGIN;
INSERT INTO scratch (note) VALUES ('hello');
SET CONSTRAINTS ALL IMMEDIATE;
COMMIT;

-- case: deferred-trigger-harmless
-- expect: allowed
-- why: Twin: a deferred constraint trigger that writes to scratch.
-- setup:
SET ROLE {{mig}};
CREATE TABLE public.scratch_log (msg text);
CREATE FUNCTION public.scratch_settle() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.scratch_log VALUES ('settled ' || NEW.id);
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER scratch_settle AFTER INSERT ON scratch DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION scratch_settle();
-- pgmoat:
BEGIN;
INSERT INTO scratch (note) VALUES ('hello');
COMMIT;

-- case: bind-parameter-runs-domain-check
-- expect: refused
-- why: The statement is SELECT 1; Parse declares a parameter it never uses, of a domain whose CHECK deletes the ledger. Bind checks it.
-- setup:
SET ROLE {{mig}};
CREATE FUNCTION public.stamp_ok(t text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM ledger.entries WHERE account_id > 0;
    RETURN true;
END $$;
CREATE DOMAIN public.stamp AS text CHECK (public.stamp_ok(VALUE));
-- pgmoat:
-- param: 2024-01-01
-- param-type: public.stamp
SELECT 1;

-- case: bind-parameter-plain-domain
-- expect: allowed
-- why: Twin: the same unused parameter, of a domain with a built-in check.
-- setup:
SET ROLE {{mig}};
CREATE DOMAIN public.stamp AS text CHECK (length(VALUE) < 20);
-- pgmoat:
-- param: 2024-01-01
-- param-type: public.stamp
SELECT 1;
