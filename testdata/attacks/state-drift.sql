-- Session-state drift: pgmoat's idea of the session's search_path (or of
-- how the server splits text) differs from the server's.
--
-- Most attacks move search_path so that it reaches schema ledger where pgmoat
-- does not look, then name a ledger table without its schema. Where it
-- helps the disguise, a decoy public.entries (not protected, empty) gives
-- pgmoat a harmless table to resolve the name to. The twins take the same
-- route to a search_path that does not reach ledger, so the unqualified
-- name really is the decoy and the statement must go through.

-- case: do-block-set-config
-- expect: refused
-- why: A DO block calls set_config with a computed setting name; the DROP then trusts the path pgmoat last saw.
-- setup:
SET ROLE {{mig}};
CREATE TABLE public.entries (id int);
-- pgmoat:
DO $$BEGIN PERFORM set_config('search' || '_path', 'ledger, public', false); END$$;
DROP TABLE entries;

-- case: do-block-plain-set
-- expect: refused
-- why: PL/pgSQL runs SET as a statement of its own and it outlives the block; the ALTER then drops a ledger column.
-- setup:
SET ROLE {{mig}};
CREATE TABLE public.entries (id int, memo text);
-- pgmoat:
DO $$BEGIN SET search_path = ledger, public; END$$;
ALTER TABLE entries DROP COLUMN memo;

-- case: do-block-set-public
-- expect: allowed
-- why: Twin: the same DO block sets a path without ledger, so DROP TABLE entries drops the decoy.
-- setup:
SET ROLE {{mig}};
CREATE TABLE public.entries (id int);
-- pgmoat:
DO $$BEGIN PERFORM set_config('search' || '_path', 'public', false); END$$;
DROP TABLE entries;

-- case: existing-function-sets-path
-- expect: refused
-- why: A SQL function that existed before pgmoat saw it moves search_path by its argument.
-- setup:
SET ROLE {{mig}};
CREATE TABLE public.entries (id int);
CREATE FUNCTION public.use_schema(s text) RETURNS text LANGUAGE sql AS $$ SELECT set_config('search_path', s, false) $$;
-- pgmoat:
SELECT use_schema('ledger, public');
DROP TABLE entries CASCADE;

-- case: update-pg-settings
-- expect: refused
-- why: UPDATE of the pg_settings view is SET by another name.
-- setup:
SET ROLE {{mig}};
CREATE TABLE public.entries (id int);
-- pgmoat:
UPDATE pg_settings SET setting = 'ledger, public' WHERE name = 'search_path';
DROP TABLE entries;

-- case: set-config-name-from-data
-- expect: refused
-- why: The setting's name comes from a table (pg_settings), not from the statement's text.
-- setup:
SET ROLE {{mig}};
CREATE TABLE public.entries (id int);
-- pgmoat:
SELECT set_config(name, 'ledger, public', false) FROM pg_settings WHERE name LIKE 'search%path';
DROP TABLE entries;

-- case: set-config-bound-parameters
-- expect: refused
-- why: set_config's name and value arrive as Bind parameters of an extended-protocol statement.
-- setup:
SET ROLE {{mig}};
CREATE TABLE public.entries (id int);
-- pgmoat:
-- param: search_path
-- param: ledger, public
SELECT set_config($1, $2, false);
DROP TABLE entries;

-- case: set-config-bound-parameters-public
-- expect: allowed
-- why: Twin: the same Bind parameters name a path without ledger; the DROP drops the decoy.
-- setup:
SET ROLE {{mig}};
CREATE TABLE public.entries (id int);
-- pgmoat:
-- param: search_path
-- param: public
SELECT set_config($1, $2, false);
DROP TABLE entries;

-- case: implicit-transaction-rolled-back
-- expect: refused
-- why: In one Query message, an error rolls back the implicit transaction and the SET in it; pgmoat may keep the SET.
-- flags: one-message
-- setup:
SET ROLE {{mig}};
CREATE TABLE public.entries (id int);
-- pgmoat:
SET search_path = ledger, public;
-- pgmoat:
-- error: 22012
SET search_path = public; SELECT 1/0;
-- pgmoat:
DROP TABLE entries;

-- case: commit-of-failed-transaction
-- expect: refused
-- why: COMMIT of a transaction that failed is a ROLLBACK: the SET inside never happened on the server.
-- setup:
SET ROLE {{mig}};
CREATE TABLE public.entries (id int);
-- pgmoat:
SET search_path = ledger, public;
BEGIN;
SET search_path = public;
-- error: 22012
SELECT 1/0;
COMMIT;
DROP TABLE entries;

-- case: commit-fails-on-deferred-constraint
-- expect: refused
-- why: The COMMIT itself fails (a deferred foreign key) and rolls the transaction back, SET included; nothing failed before it.
-- setup:
SET ROLE {{mig}};
CREATE TABLE public.entries (id int);
CREATE TABLE public.pending (customer_id int REFERENCES customers DEFERRABLE INITIALLY DEFERRED);
-- pgmoat:
SET search_path = ledger, public;
BEGIN;
SET search_path = public;
INSERT INTO pending VALUES (424242);
-- error: 23503
COMMIT;
DROP TABLE entries;

-- case: commit-of-failed-transaction-harmless
-- expect: allowed
-- why: Twin: the SET that the failed transaction rolls back is the one that would have reached ledger.
-- setup:
SET ROLE {{mig}};
CREATE TABLE public.entries (id int);
-- pgmoat:
BEGIN;
SET search_path = ledger, public;
-- error: 22012
SELECT 1/0;
COMMIT;
DROP TABLE entries;

-- case: savepoint-names-reused
-- expect: refused
-- why: Two savepoints share a name; RELEASE drops the inner one and ROLLBACK TO then undoes the SET made after the outer one.
-- setup:
SET ROLE {{mig}};
CREATE TABLE public.entries (id int);
-- pgmoat:
SET search_path = ledger, public;
BEGIN;
SAVEPOINT s;
SAVEPOINT s;
SET search_path = public;
RELEASE SAVEPOINT s;
ROLLBACK TO SAVEPOINT s;
COMMIT;
DROP TABLE entries;

-- case: reset-to-role-default
-- expect: refused
-- why: RESET goes back to the role's default for this database (set before the session), not to the built-in "$user", public.
-- setup:
SET ROLE {{mig}};
CREATE TABLE public.entries (id int);
RESET ROLE;
ALTER ROLE {{mig}} IN DATABASE {{db}} SET search_path = ledger, public;
-- pgmoat:
SET search_path = public;
RESET search_path;
DROP TABLE entries;

-- case: set-role-moves-user-schema
-- expect: refused
-- why: "$user" in search_path follows SET ROLE: after SET ROLE ledger it names schema ledger, not the session user's schema.
-- setup:
CREATE SCHEMA {{mig}} AUTHORIZATION {{mig}};
CREATE TABLE {{mig}}.entries (id int);
ALTER TABLE {{mig}}.entries OWNER TO {{mig}};
-- pgmoat:
SET search_path = "$user";
SET ROLE ledger;
DROP TABLE entries;

-- case: set-role-reads-user-schema
-- expect: allowed
-- why: Twin: the same SET ROLE and "$user" path, to read.
-- pgmoat:
SET search_path = "$user";
SET ROLE ledger;
SELECT count(*) FROM entries;

-- case: function-set-clause
-- expect: refused
-- why: A new function's own SET search_path decides what its body's unqualified name is.
-- setup:
SET ROLE {{mig}};
CREATE TABLE public.entries (id int);
-- pgmoat:
CREATE FUNCTION public.tidy() RETURNS void LANGUAGE sql SET search_path = ledger, public AS $$ DELETE FROM entries $$;
SELECT tidy();

-- case: alter-function-set-path
-- expect: refused
-- why: An existing function's body deletes from an unqualified "entries" (the decoy when it was created); ALTER FUNCTION ... SET search_path re-aims it.
-- setup:
SET ROLE {{mig}};
CREATE TABLE public.entries (id int);
CREATE FUNCTION public.tidy() RETURNS void LANGUAGE sql AS $$ DELETE FROM entries $$;
-- pgmoat:
ALTER FUNCTION tidy() SET search_path = ledger, public;
SELECT tidy();

-- case: alter-function-set-path-public
-- expect: allowed
-- why: Twin: the same function aimed at public, where "entries" is the decoy.
-- setup:
SET ROLE {{mig}};
CREATE TABLE public.entries (id int);
CREATE FUNCTION public.tidy() RETURNS void LANGUAGE sql AS $$ DELETE FROM entries $$;
-- pgmoat:
ALTER FUNCTION tidy() SET search_path = public;
SELECT tidy();

-- case: database-default-then-reconnect
-- expect: refused
-- why: The database's default search_path applies to the next session; pgmoat must read it, not assume "$user", public.
-- setup:
SET ROLE {{mig}};
CREATE TABLE public.entries (id int);
-- pgmoat:
ALTER DATABASE {{db}} SET search_path = ledger, public;
-- reconnect
DROP TABLE entries;

-- case: startup-options
-- expect: refused
-- why: The startup packet's options set search_path before the first statement.
-- startup: options=-c search_path=ledger,public
-- setup:
SET ROLE {{mig}};
CREATE TABLE public.entries (id int);
-- pgmoat:
DROP TABLE entries;

-- case: alter-system-and-reload
-- expect: refused
-- as: superuser
-- flags: exclusive
-- why: ALTER SYSTEM plus pg_reload_conf() changes search_path under the live session (it never SET one itself); the session applies the reload after the pg_sleep.
-- setup:
CREATE TABLE public.entries (id int);
-- pgmoat:
ALTER SYSTEM SET search_path = ledger, public;
SELECT pg_reload_conf();
SELECT pg_sleep(1);
DROP TABLE entries;

-- case: trigger-on-unprotected-table-sets-path
-- expect: refused
-- why: An INSERT into an unprotected table fires an existing trigger that moves search_path for the rest of the session.
-- setup:
SET ROLE {{mig}};
CREATE TABLE public.entries (id int);
CREATE FUNCTION public.scratch_touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('search_path', 'ledger, public', false);
    RETURN NEW;
END $$;
CREATE TRIGGER scratch_touch BEFORE INSERT ON scratch FOR EACH ROW EXECUTE FUNCTION scratch_touch();
-- pgmoat:
INSERT INTO scratch (note) VALUES ('hello');
DROP TABLE entries;

-- case: lexer-standard-strings-off-in-do
-- expect: refused
-- why: A DO block turns standard_conforming_strings off; the next text hides a TRUNCATE in what pgmoat reads as a string.
-- pgmoat:
DO $$BEGIN PERFORM set_config('standard_conforming' || '_strings', 'off', false); END$$;
SELECT 'a\' , ' ; DELETE FROM ledger.entries; -- ';

-- case: lexer-standard-strings-off-existing-function
-- expect: refused
-- why: The same through a function that existed before: set_config with both arguments from the call.
-- setup:
SET ROLE {{mig}};
CREATE FUNCTION public.tune(k text, v text) RETURNS text LANGUAGE sql AS $$ SELECT set_config(k, v, false) $$;
-- pgmoat:
SELECT tune('standard_conforming_strings', 'off');
SELECT 'a\' , ' ; DROP TABLE ledger.balances; -- ';

-- case: lexer-standard-strings-on
-- expect: allowed
-- why: Twin: the DO block sets standard_conforming_strings on (as it was): the text is a SELECT of two strings.
-- pgmoat:
DO $$BEGIN PERFORM set_config('standard_conforming' || '_strings', 'on', false); END$$;
SELECT 'a\' , ' ; DELETE FROM ledger.entries; -- ';

-- case: shadowed-current-setting
-- expect: refused
-- why: With public before pg_catalog in search_path, a public.current_setting answers whoever reads the path back with
-- why: a harmless one, while the server's path reaches ledger.
-- setup:
SET ROLE {{mig}};
CREATE TABLE public.entries (id int);
CREATE FUNCTION public.current_setting(text) RETURNS text LANGUAGE sql AS $$ SELECT '"$user", public'::text $$;
CREATE FUNCTION public.current_setting(text, boolean) RETURNS text LANGUAGE sql AS $$ SELECT '"$user", public'::text $$;
-- pgmoat:
DO $$BEGIN PERFORM pg_catalog.set_config('search' || '_path', 'ledger, public, pg_catalog', false); END$$;
DROP TABLE entries;

-- case: shadowed-statistics-view
-- expect: refused
-- why: A public view named like the statistics view of the rows a transaction changed, with no rows, ahead of pg_catalog
-- why: in search_path: whoever counts the rows a statement deleted by its unqualified name counts none.
-- setup:
SET ROLE {{mig}};
CREATE VIEW public.pg_stat_xact_user_tables AS SELECT * FROM pg_catalog.pg_stat_xact_user_tables WHERE false;
CREATE VIEW public.pg_stat_xact_all_tables AS SELECT * FROM pg_catalog.pg_stat_xact_all_tables WHERE false;
-- pgmoat:
SET search_path = public, pg_catalog;
DELETE FROM ledger.entries WHERE id > 0;

-- case: track-counts-off
-- expect: refused
-- as: superuser
-- why: With track_counts off the server counts no row a statement deletes, for this session.
-- pgmoat:
SET track_counts = off;
DELETE FROM ledger.entries WHERE id > 0;

-- case: track-counts-off-for-the-role
-- expect: refused
-- why: The migration role's sessions start with track_counts off (set for it before): the same blindness, no SET in sight.
-- setup:
ALTER ROLE {{mig}} SET track_counts = off;
-- pgmoat:
DELETE FROM ledger.entries WHERE id > 0;

-- case: track-counts-on
-- expect: allowed
-- as: superuser
-- why: Twin: track_counts set on, then a targeted delete.
-- pgmoat:
SET track_counts = on;
DELETE FROM ledger.entries WHERE id = 7;

-- case: statistics-snapshot
-- expect: refused
-- why: stats_fetch_consistency = snapshot freezes the cumulative statistics a transaction read first.
-- pgmoat:
SET stats_fetch_consistency = snapshot;
BEGIN;
SELECT count(*) FROM pg_stat_user_tables;
DELETE FROM ledger.entries WHERE id > 0;
COMMIT;
