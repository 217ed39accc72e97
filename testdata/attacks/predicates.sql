-- Predicates that look targeted and match every row.
--
-- Each attack writes a WHERE (or a MERGE source, or an ON CONFLICT) that
-- names a key, a column or a subquery, so that it reads as a targeted
-- statement, and yet matches every row of a protected table: always-true
-- forms that the parse tree can prove, references to the same table, and
-- conditions over the data that only the server's answer settles. The
-- twins use the same forms and match one row.

-- case: id-greater-than-zero
-- expect: refused
-- why: Every ledger id is positive, so id > 0 deletes the whole ledger; only the data says so.
-- pgmoat:
DELETE FROM ledger.entries WHERE id > 0;

-- case: parameter-array-of-every-id
-- expect: refused
-- why: id = ANY($1), with $1 bound (extended protocol) to an array of every id in the ledger.
-- pgmoat:
-- param: {1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,32,33,34,35,36,37,38,39,40,41,42,43,44,45,46,47,48,49,50,51,52,53,54,55,56,57,58,59,60,61,62,63,64,65,66,67,68,69,70,71,72,73,74,75,76,77,78,79,80,81,82,83,84,85,86,87,88,89,90,91,92,93,94,95,96,97,98,99,100,101,102,103,104,105,106,107,108,109,110,111,112,113,114,115,116,117,118,119,120,121,122,123,124,125,126,127,128,129,130,131,132,133,134,135,136,137,138,139,140,141,142,143,144,145,146,147,148,149,150,151,152,153,154,155,156,157,158,159,160,161,162,163,164,165,166,167,168,169,170,171,172,173,174,175,176,177,178,179,180,181,182,183,184,185,186,187,188,189,190,191,192,193,194,195,196,197,198,199,200}
DELETE FROM ledger.entries WHERE id = ANY($1::bigint[]);

-- case: parameter-array-of-one-id
-- expect: allowed
-- why: Twin: the same statement with one id bound.
-- pgmoat:
-- param: {5}
DELETE FROM ledger.entries WHERE id = ANY($1::bigint[]);

-- case: self-reference-array
-- expect: refused
-- why: id = ANY(ARRAY(SELECT id FROM the same table)).
-- pgmoat:
DELETE FROM ledger.entries WHERE id = ANY(ARRAY(SELECT id FROM ledger.entries));

-- case: self-join-using
-- expect: refused
-- why: DELETE ... USING the same table joined on its key.
-- pgmoat:
DELETE FROM ledger.entries e USING ledger.entries e2 WHERE e.id = e2.id;

-- case: in-union-over-same-table
-- expect: refused
-- why: IN a UNION whose first branch is every id of the table.
-- pgmoat:
DELETE FROM ledger.entries WHERE id IN (SELECT id FROM ledger.entries UNION SELECT -1);

-- case: cte-over-same-table
-- expect: refused
-- why: A CTE names the doomed rows: all of them.
-- pgmoat:
WITH doomed AS (SELECT id FROM ledger.entries) DELETE FROM ledger.entries WHERE id IN (SELECT id FROM doomed);

-- case: self-reference-max-id
-- expect: allowed
-- why: Twin: a subquery over the same table that picks one row.
-- pgmoat:
DELETE FROM ledger.entries WHERE id = (SELECT max(id) FROM ledger.entries);

-- case: is-distinct-from-null
-- expect: refused
-- why: A NOT NULL key IS DISTINCT FROM NULL in every row.
-- pgmoat:
UPDATE accounts SET balance = 0 WHERE id IS DISTINCT FROM NULL;

-- case: case-then-true
-- expect: refused
-- why: Both branches of the CASE are true.
-- pgmoat:
UPDATE accounts SET nickname = NULL WHERE CASE WHEN id = 1 THEN true ELSE true END;

-- case: key-equals-key-plus-zero
-- expect: refused
-- why: id = id + 0 is id = id in arithmetic clothes.
-- pgmoat:
DELETE FROM ledger.entries WHERE id = id + 0;

-- case: range-covering-the-type
-- expect: refused
-- why: BETWEEN the smallest and the largest bigint.
-- pgmoat:
DELETE FROM ledger.entries WHERE id BETWEEN -9223372036854775808 AND 9223372036854775807;

-- case: range-of-one-row
-- expect: allowed
-- why: Twin: a BETWEEN that spans one key.
-- pgmoat:
UPDATE accounts SET balance = 1 WHERE id BETWEEN 3 AND 3;

-- case: tableoid-positive
-- expect: refused
-- why: Every row's tableoid is a positive OID, in the parent and in the inheritance child.
-- pgmoat:
DELETE FROM events WHERE tableoid > 0;

-- case: not-in-constant-subquery
-- expect: refused
-- why: No id is in (SELECT -1).
-- pgmoat:
DELETE FROM ledger.entries WHERE id NOT IN (SELECT -1);

-- case: cast-to-text-not-empty
-- expect: refused
-- why: No integer's text is the empty string.
-- pgmoat:
UPDATE profiles SET bio = NULL WHERE id::text <> '';

-- case: merge-from-generate-series
-- expect: refused
-- why: MERGE joined on the key with a series that covers every id.
-- pgmoat:
MERGE INTO ledger.entries e USING generate_series(1, 100000) AS g(id) ON e.id = g.id WHEN MATCHED THEN DELETE;

-- case: merge-one-row
-- expect: allowed
-- why: Twin: MERGE from a one-row VALUES list.
-- pgmoat:
MERGE INTO accounts a USING (VALUES (3::bigint)) AS v(id) ON a.id = v.id WHEN MATCHED THEN UPDATE SET balance = 1;

-- case: insert-select-self-on-conflict
-- expect: refused
-- why: INSERT of every row of the table into itself: ON CONFLICT DO UPDATE rewrites each one.
-- pgmoat:
INSERT INTO accounts SELECT * FROM accounts ON CONFLICT (id) DO UPDATE SET balance = 0;

-- case: upsert-one-row
-- expect: allowed
-- why: Twin: an upsert of one row.
-- pgmoat:
INSERT INTO accounts (id, customer_id, email) VALUES (3, 3, 'user3@example.com') ON CONFLICT (id) DO UPDATE SET nickname = 'three';

-- case: prepared-statement-argument
-- expect: refused
-- why: PREPARE with a parameter, EXECUTE with the value that matches everything.
-- pgmoat:
PREPARE wipe(bigint) AS DELETE FROM ledger.entries WHERE id >= $1;
EXECUTE wipe(0);

-- case: function-argument-matches-all
-- expect: refused
-- why: An existing function deletes entries below a cutoff; the argument is the largest bigint.
-- setup:
SET ROLE {{mig}};
CREATE FUNCTION public.drop_entries_before(cutoff bigint) RETURNS bigint LANGUAGE sql AS $$
    WITH d AS (DELETE FROM ledger.entries WHERE id < cutoff RETURNING 1) SELECT count(*) FROM d
$$;
-- pgmoat:
SELECT drop_entries_before(9223372036854775807);

-- case: function-argument-matches-one
-- expect: allowed
-- why: Twin: the same function with a cutoff that matches one entry.
-- setup:
SET ROLE {{mig}};
CREATE FUNCTION public.drop_entries_before(cutoff bigint) RETURNS bigint LANGUAGE sql AS $$
    WITH d AS (DELETE FROM ledger.entries WHERE id < cutoff RETURNING 1) SELECT count(*) FROM d
$$;
-- pgmoat:
SELECT drop_entries_before(2);

-- case: update-from-self
-- expect: refused
-- why: UPDATE ... FROM the same table joined on the key.
-- pgmoat:
UPDATE accounts a SET balance = 0 FROM accounts b WHERE a.id = b.id;

-- case: partition-key-range
-- expect: refused
-- why: Every order was placed after 1900.
-- pgmoat:
DELETE FROM orders WHERE placed > '1900-01-01';

-- case: delete-and-reinsert
-- expect: refused
-- why: A writable CTE deletes every balance and inserts each back as 0: the row count does not move.
-- pgmoat:
WITH d AS (DELETE FROM ledger.balances RETURNING account_id) INSERT INTO ledger.balances (account_id, balance) SELECT account_id, 0 FROM d;

-- case: delete-one-entry
-- expect: allowed
-- why: Twin: a DELETE fixed by the primary key.
-- pgmoat:
DELETE FROM ledger.entries WHERE id = 7;
