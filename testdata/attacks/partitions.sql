-- Partitions and inheritance children of protected tables.
--
-- public.orders is partitioned by range (2023, 2024 sub-partitioned by
-- hash, and a default partition); public.events has an inheritance child,
-- events_archive. Their rows are the protected table's rows: protection
-- must flow down to them, and a protected table must not be hung under an
-- unprotected parent whose DROP, TRUNCATE or DELETE then reaches it.

-- case: drop-partition
-- expect: refused
-- why: DROP TABLE of a partition removes a year of the protected table's rows.
-- pgmoat:
DROP TABLE orders_2023;

-- case: truncate-sub-partitions
-- expect: refused
-- why: The 2024 partition is itself partitioned; TRUNCATE of its hash partitions empties it.
-- pgmoat:
TRUNCATE orders_2024_h0, orders_2024_h1;

-- case: delete-from-default-partition
-- expect: refused
-- why: DELETE without WHERE on the default partition.
-- pgmoat:
DELETE FROM orders_default;

-- case: update-partition
-- expect: refused
-- why: UPDATE without WHERE on a partition zeroes every 2023 amount.
-- pgmoat:
UPDATE orders_2023 SET amount = 0;

-- case: detach-partition
-- expect: refused
-- why: DETACH alone: the rows are no longer part of orders, as the application reads it.
-- pgmoat:
ALTER TABLE orders DETACH PARTITION orders_2023;

-- case: detach-then-drop
-- expect: refused
-- why: DETACH makes the partition a table of its own, then DROP of a name that no longer belongs to orders.
-- pgmoat:
ALTER TABLE orders DETACH PARTITION orders_default;
DROP TABLE orders_default;

-- case: detach-concurrently-then-truncate
-- expect: refused
-- why: DETACH ... CONCURRENTLY cannot run in a transaction block (no guard can wrap it); then TRUNCATE.
-- pgmoat:
ALTER TABLE orders_2024 DETACH PARTITION orders_2024_h1 CONCURRENTLY;
TRUNCATE orders_2024_h1;

-- case: drop-inheritance-child
-- expect: refused
-- why: events_archive holds 20 of the 50 rows SELECT ... FROM events returns.
-- pgmoat:
DROP TABLE events_archive;

-- case: no-inherit-then-truncate
-- expect: refused
-- why: NO INHERIT unhooks the child; TRUNCATE then empties a table nothing protects by name.
-- pgmoat:
ALTER TABLE events_archive NO INHERIT events;
TRUNCATE events_archive;

-- case: child-set-unlogged
-- expect: refused
-- why: An unlogged child loses its rows in the next crash and is not replicated.
-- pgmoat:
ALTER TABLE events_archive SET UNLOGGED;

-- case: attach-under-unprotected-parent-then-drop
-- expect: refused
-- why: A protected table attached as the only partition of a new, unprotected table; DROP of that table drops its partitions.
-- pgmoat:
CREATE TABLE public.holder (LIKE ledger.balances) PARTITION BY RANGE (account_id);
ALTER TABLE holder ATTACH PARTITION ledger.balances FOR VALUES FROM (MINVALUE) TO (MAXVALUE);
DROP TABLE holder;

-- case: inherit-from-unprotected-parent-then-delete
-- expect: refused
-- why: ALTER TABLE ... INHERIT makes a protected table the child of a new table; DELETE of the parent deletes the child's rows.
-- pgmoat:
CREATE TABLE public.sink (account_id bigint);
ALTER TABLE ledger.balances INHERIT sink;
DELETE FROM sink;

-- case: inherit-from-unprotected-parent-then-drop-cascade
-- expect: refused
-- why: The append-only audit trail refuses DELETE and TRUNCATE itself; DROP ... CASCADE of a new parent drops it without asking.
-- pgmoat:
CREATE TABLE public.sink (note text);
ALTER TABLE ledger.audit_trail INHERIT sink;
DROP TABLE sink CASCADE;

-- case: create-partition
-- expect: allowed
-- why: Twin: a new partition of the protected table only adds to it.
-- pgmoat:
CREATE TABLE orders_2025 PARTITION OF orders FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');

-- case: targeted-delete-in-partition
-- expect: allowed
-- why: Twin: one order deleted through its partition.
-- pgmoat:
DELETE FROM orders_2023 WHERE id = 61;

-- case: partition-of-unprotected-table
-- expect: allowed
-- why: Twin: DROP and TRUNCATE of partitions of a table nobody protects.
-- setup:
SET ROLE {{mig}};
CREATE TABLE public.logs (id int, at date) PARTITION BY RANGE (at);
CREATE TABLE public.logs_2023 PARTITION OF logs FOR VALUES FROM ('2023-01-01') TO ('2024-01-01');
CREATE TABLE public.logs_2024 PARTITION OF logs FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
INSERT INTO logs SELECT g, date '2023-01-01' + g FROM generate_series(1, 500) g;
-- pgmoat:
DROP TABLE logs_2023;
TRUNCATE logs;

-- case: child-of-unprotected-parent
-- expect: allowed
-- why: Twin: TRUNCATE and DROP ... CASCADE of an unprotected parent whose children are unprotected too.
-- setup:
SET ROLE {{mig}};
CREATE TABLE public.notes (id int);
CREATE TABLE public.notes_old () INHERITS (notes);
INSERT INTO notes_old SELECT generate_series(1, 10);
-- pgmoat:
TRUNCATE notes;
DROP TABLE notes CASCADE;

-- case: read-and-insert-partition
-- expect: allowed
-- why: Twin: reading, analysing and inserting through a partition.
-- pgmoat:
SELECT count(*) FROM orders_2024_h0;
ANALYZE orders_2023;
INSERT INTO orders_2023 (account_id, placed, amount) VALUES (1, '2023-05-05', 5);

-- case: detach-unprotected-partition
-- expect: allowed
-- why: Twin: DETACH CONCURRENTLY and DROP of a partition of an unprotected table.
-- setup:
SET ROLE {{mig}};
CREATE TABLE public.logs (id int, at date) PARTITION BY RANGE (at);
CREATE TABLE public.logs_2023 PARTITION OF logs FOR VALUES FROM ('2023-01-01') TO ('2024-01-01');
-- pgmoat:
ALTER TABLE logs DETACH PARTITION logs_2023 CONCURRENTLY;
DROP TABLE logs_2023;
