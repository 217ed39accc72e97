-- Loops of targeted DML: every statement in the loop names one row by its
-- key, and the loop visits every row. In DO blocks, in functions created in
-- the same session or before it, in procedures that commit, in triggers,
-- and in a SELECT that calls a one-row function per row. The twins run the
-- same loops over one row, over an unprotected table, or only to read.

-- case: do-for-over-query
-- expect: refused
-- why: FOR r IN SELECT id ... LOOP DELETE ... WHERE id = r.id.
-- pgmoat:
DO $$
DECLARE r record;
BEGIN
    FOR r IN SELECT id FROM ledger.entries LOOP
        DELETE FROM ledger.entries WHERE id = r.id;
    END LOOP;
END $$;

-- case: do-integer-range
-- expect: refused
-- why: An integer loop over every id there could be.
-- pgmoat:
DO $$
BEGIN
    FOR i IN 1..1000 LOOP
        DELETE FROM ledger.entries WHERE id = i;
    END LOOP;
END $$;

-- case: do-until-empty
-- expect: refused
-- why: Delete the smallest key until nothing is found.
-- pgmoat:
DO $$
BEGIN
    LOOP
        DELETE FROM ledger.balances WHERE account_id = (SELECT min(account_id) FROM ledger.balances);
        EXIT WHEN NOT FOUND;
    END LOOP;
END $$;

-- case: do-foreach-array-update
-- expect: refused
-- why: FOREACH over an array of every key, zeroing each balance.
-- pgmoat:
DO $$
DECLARE ids bigint[]; x bigint;
BEGIN
    SELECT array_agg(id) INTO ids FROM accounts;
    FOREACH x IN ARRAY ids LOOP
        UPDATE accounts SET balance = 0 WHERE id = x;
    END LOOP;
END $$;

-- case: do-cursor-where-current-of
-- expect: refused
-- why: WHERE CURRENT OF names one row, the one the cursor is on, and the cursor walks them all.
-- pgmoat:
DO $$
DECLARE c CURSOR FOR SELECT id FROM ledger.entries FOR UPDATE;
BEGIN
    FOR r IN c LOOP
        DELETE FROM ledger.entries WHERE CURRENT OF c;
    END LOOP;
END $$;

-- case: do-subtransaction-per-row
-- expect: refused
-- why: Each delete in its own exception block (a subtransaction), errors swallowed.
-- pgmoat:
DO $$
DECLARE r record;
BEGIN
    FOR r IN SELECT id FROM profiles LOOP
        BEGIN
            DELETE FROM profiles WHERE id = r.id;
        EXCEPTION WHEN OTHERS THEN NULL;
        END;
    END LOOP;
END $$;

-- case: new-function-loop
-- expect: refused
-- why: The loop in a function created through pgmoat, then called.
-- pgmoat:
CREATE FUNCTION public.cleanup_entries() RETURNS int LANGUAGE plpgsql AS $$
DECLARE r record; n int := 0;
BEGIN
    FOR r IN SELECT id FROM ledger.entries LOOP
        DELETE FROM ledger.entries WHERE id = r.id;
        n := n + 1;
    END LOOP;
    RETURN n;
END $$;
SELECT cleanup_entries();

-- case: existing-function-loop
-- expect: refused
-- why: The same loop in a function that existed before pgmoat saw it.
-- setup:
SET ROLE {{mig}};
CREATE FUNCTION public.cleanup_entries() RETURNS int LANGUAGE plpgsql AS $$
DECLARE r record; n int := 0;
BEGIN
    FOR r IN SELECT id FROM ledger.entries LOOP
        DELETE FROM ledger.entries WHERE id = r.id;
        n := n + 1;
    END LOOP;
    RETURN n;
END $$;
-- pgmoat:
SELECT cleanup_entries();

-- case: select-calls-one-row-function
-- expect: refused
-- why: forget(id) deletes one row by key; the SELECT calls it for every row.
-- setup:
SET ROLE {{mig}};
CREATE FUNCTION public.forget(bigint) RETURNS bigint LANGUAGE sql AS $$
    DELETE FROM ledger.entries WHERE id = $1 RETURNING id
$$;
-- pgmoat:
SELECT forget(id) FROM ledger.entries;

-- case: generate-series-calls-one-row-function
-- expect: refused
-- why: The same function called for every number from 1 to 1000.
-- setup:
SET ROLE {{mig}};
CREATE FUNCTION public.forget(bigint) RETURNS bigint LANGUAGE sql AS $$
    DELETE FROM ledger.entries WHERE id = $1 RETURNING id
$$;
-- pgmoat:
SELECT count(forget(g)) FROM generate_series(1, 1000) AS g;

-- case: recursion
-- expect: refused
-- why: A function deletes one row, then calls itself.
-- setup:
SET ROLE {{mig}};
CREATE FUNCTION public.peel(n int) RETURNS int LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM ledger.balances WHERE account_id = (SELECT min(account_id) FROM ledger.balances);
    IF FOUND AND n > 0 THEN
        RETURN peel(n - 1);
    END IF;
    RETURN n;
END $$;
-- pgmoat:
SELECT peel(1000);

-- case: trigger-per-inserted-row
-- expect: refused
-- why: An existing trigger on scratch deletes one ledger entry per inserted row; the INSERT adds 300 rows to scratch.
-- setup:
SET ROLE {{mig}};
CREATE FUNCTION public.scratch_consume() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM ledger.entries WHERE id = NEW.account_id;
    RETURN NEW;
END $$;
CREATE TRIGGER scratch_consume AFTER INSERT ON scratch FOR EACH ROW EXECUTE FUNCTION scratch_consume();
-- pgmoat:
INSERT INTO scratch (note, account_id) SELECT 'batch', g FROM generate_series(1, 300) AS g;

-- case: procedure-commits-per-row
-- expect: refused
-- why: A procedure deletes row by row and commits after each: it cannot run under a savepoint, and each commit is final.
-- setup:
SET ROLE {{mig}};
CREATE PROCEDURE public.drain_entries() LANGUAGE plpgsql AS $$
DECLARE r record;
BEGIN
    FOR r IN SELECT id FROM ledger.entries LOOP
        DELETE FROM ledger.entries WHERE id = r.id;
        COMMIT;
    END LOOP;
END $$;
-- pgmoat:
CALL drain_entries();

-- case: do-loop-one-row
-- expect: allowed
-- why: Twin: the FOR loop over a query that returns one row.
-- pgmoat:
DO $$
DECLARE r record;
BEGIN
    FOR r IN SELECT id FROM ledger.entries WHERE id = 5 LOOP
        DELETE FROM ledger.entries WHERE id = r.id;
    END LOOP;
END $$;

-- case: do-loop-over-unprotected-table
-- expect: allowed
-- why: Twin: the loop empties scratch, which nothing protects.
-- pgmoat:
DO $$
DECLARE r record;
BEGIN
    FOR r IN SELECT id FROM scratch LOOP
        DELETE FROM scratch WHERE id = r.id;
    END LOOP;
END $$;

-- case: do-loop-reads
-- expect: allowed
-- why: Twin: the loop visits every ledger row to add amounts up.
-- pgmoat:
DO $$
DECLARE r record; total numeric := 0;
BEGIN
    FOR r IN SELECT amount FROM ledger.entries LOOP
        total := total + r.amount;
    END LOOP;
    RAISE NOTICE 'total %', total;
END $$;

-- case: one-row-function-called-once
-- expect: allowed
-- why: Twin: the one-row function called for one key.
-- setup:
SET ROLE {{mig}};
CREATE FUNCTION public.forget(bigint) RETURNS bigint LANGUAGE sql AS $$
    DELETE FROM ledger.entries WHERE id = $1 RETURNING id
$$;
-- pgmoat:
SELECT forget(9);

-- case: trigger-for-one-inserted-row
-- expect: allowed
-- why: Twin: the per-row trigger fired by a one-row INSERT.
-- setup:
SET ROLE {{mig}};
CREATE FUNCTION public.scratch_consume() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM ledger.entries WHERE id = NEW.account_id;
    RETURN NEW;
END $$;
CREATE TRIGGER scratch_consume AFTER INSERT ON scratch FOR EACH ROW EXECUTE FUNCTION scratch_consume();
-- pgmoat:
INSERT INTO scratch (note, account_id) VALUES ('one', 11);
