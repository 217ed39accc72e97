-- Side doors out of the transaction: a function that opens another
-- connection (dblink, postgres_fdw) commits on its own, where no savepoint
-- of pgmoat's reaches it. pgmoat knew dblink_exec by its name: here it is
-- renamed, re-declared as LANGUAGE c, used as an operator, an aggregate's
-- transition, a cast, and fired by innocent statements on unprotected
-- tables through a default, a view, a domain check, an index expression
-- (INSERT, COPY FROM STDIN, CREATE INDEX, REINDEX), a generated column or
-- a row-level security policy. The remote statement always deletes the
-- ledger ({{conn}} is the migration role's own connection string: the
-- server is reachable from itself whatever is in front of it).
--
-- Some index cases use relay_target(): an IMMUTABLE wrapper that returns
-- the setting app.relay, NULL until the attacker sets it, so that the
-- index can exist before the case (a STRICT function is not called on
-- NULL) and fire only when the case wants it.

-- case: renamed-before
-- expect: refused
-- why: dblink_exec renamed by a DBA before pgmoat started.
-- setup:
CREATE EXTENSION dblink;
ALTER FUNCTION dblink_exec(text, text) RENAME TO run_remote;
-- pgmoat:
SELECT run_remote('{{conn}}', 'DELETE FROM ledger.entries');

-- case: renamed-through-pgmoat
-- expect: refused
-- as: superuser
-- why: ALTER FUNCTION ... RENAME of dblink_exec, then a call by the new name.
-- setup:
CREATE EXTENSION dblink;
-- pgmoat:
ALTER FUNCTION dblink_exec(text, text) RENAME TO ping;
SELECT ping('{{conn}}', 'DELETE FROM ledger.entries');

-- case: redeclared-language-c
-- expect: refused
-- as: superuser
-- why: The same C symbol declared under a new name; no extension needed.
-- pgmoat:
CREATE FUNCTION public.healthcheck(text, text) RETURNS text AS '$libdir/dblink', 'dblink_exec' LANGUAGE c STRICT;
SELECT healthcheck('{{conn}}', 'DELETE FROM ledger.entries');

-- case: operator
-- expect: refused
-- why: An operator whose procedure is dblink_exec.
-- setup:
CREATE EXTENSION dblink;
-- pgmoat:
CREATE OPERATOR public.==> (LEFTARG = text, RIGHTARG = text, FUNCTION = dblink_exec);
SELECT '{{conn}}' ==> 'DELETE FROM ledger.entries';

-- case: aggregate
-- expect: refused
-- why: An aggregate whose transition function is dblink_exec, its initial state the connection string.
-- setup:
CREATE EXTENSION dblink;
-- pgmoat:
CREATE AGGREGATE public.relay(text) (SFUNC = dblink_exec, STYPE = text, INITCOND = '{{conn}}');
SELECT relay(cmd) FROM (VALUES ('DELETE FROM ledger.entries')) AS v(cmd);

-- case: assignment-cast
-- expect: refused
-- why: An assignment cast to a type of scratch's column, through a renamed dblink_exec; the statement is an INSERT into scratch.
-- setup:
CREATE EXTENSION dblink;
ALTER FUNCTION dblink_exec(text, text) RENAME TO dx;
SET ROLE {{mig}};
CREATE TYPE public.job AS (status text);
CREATE FUNCTION public.to_job(text) RETURNS public.job LANGUAGE sql AS $$ SELECT ROW(dx('{{conn}}', $1))::public.job $$;
CREATE TABLE public.jobs (j public.job);
-- pgmoat:
CREATE CAST (text AS job) WITH FUNCTION to_job(text) AS ASSIGNMENT;
INSERT INTO jobs (j) SELECT 'DELETE FROM ledger.entries'::text;

-- case: column-default
-- expect: refused
-- why: scratch has a column whose default runs dblink_exec; an INSERT into scratch fires it.
-- setup:
CREATE EXTENSION dblink;
ALTER TABLE scratch ADD COLUMN synced text;
ALTER TABLE scratch ALTER COLUMN synced SET DEFAULT dblink_exec('{{conn}}', 'DELETE FROM ledger.entries');
-- pgmoat:
INSERT INTO scratch (note) VALUES ('hello');

-- case: view
-- expect: refused
-- why: A view whose column is a dblink_exec call; the statement is a SELECT.
-- setup:
CREATE EXTENSION dblink;
SET ROLE {{mig}};
CREATE VIEW public.health AS SELECT dblink_exec('{{conn}}', 'DELETE FROM ledger.entries') AS status;
-- pgmoat:
SELECT * FROM health;

-- case: domain-check
-- expect: refused
-- why: A domain whose CHECK runs its value through dblink_exec; a cast to the domain runs it.
-- setup:
CREATE EXTENSION dblink;
CREATE DOMAIN public.checked_sql AS text CHECK (dblink_exec('{{conn}}', VALUE) IS NOT NULL);
-- pgmoat:
SELECT 'DELETE FROM ledger.entries'::checked_sql;

-- case: index-expression-on-insert
-- expect: refused
-- why: An index expression of an unprotected table calls dblink_exec (declared IMMUTABLE); an INSERT evaluates it.
-- setup:
CREATE FUNCTION public.imm_exec(text, text) RETURNS text AS '$libdir/dblink', 'dblink_exec' LANGUAGE c IMMUTABLE STRICT;
CREATE TABLE public.queue (cmd text);
ALTER TABLE public.queue OWNER TO {{mig}};
CREATE INDEX queue_relay ON public.queue (public.imm_exec('{{conn}}', cmd));
-- pgmoat:
INSERT INTO queue (cmd) VALUES ('DELETE FROM ledger.entries');

-- case: index-expression-on-copy
-- expect: refused
-- why: The same index fired by COPY FROM STDIN.
-- setup:
CREATE FUNCTION public.imm_exec(text, text) RETURNS text AS '$libdir/dblink', 'dblink_exec' LANGUAGE c IMMUTABLE STRICT;
CREATE TABLE public.queue (cmd text);
ALTER TABLE public.queue OWNER TO {{mig}};
CREATE INDEX queue_relay ON public.queue (public.imm_exec('{{conn}}', cmd));
-- pgmoat:
-- copy: DELETE FROM ledger.entries
COPY queue (cmd) FROM STDIN;

-- case: create-index
-- expect: refused
-- why: CREATE INDEX on an unprotected table evaluates an existing function over the rows already there.
-- setup:
CREATE FUNCTION public.imm_exec(text, text) RETURNS text AS '$libdir/dblink', 'dblink_exec' LANGUAGE c IMMUTABLE STRICT;
CREATE TABLE public.queue (cmd text);
ALTER TABLE public.queue OWNER TO {{mig}};
INSERT INTO public.queue VALUES ('DELETE FROM ledger.entries');
-- pgmoat:
CREATE INDEX queue_relay ON queue (imm_exec('{{conn}}', cmd));

-- case: reindex
-- expect: refused
-- why: REINDEX of an unprotected table whose index expression relays its rows once app.relay names a connection.
-- setup:
CREATE FUNCTION public.imm_exec(text, text) RETURNS text AS '$libdir/dblink', 'dblink_exec' LANGUAGE c IMMUTABLE STRICT;
CREATE FUNCTION public.relay_target() RETURNS text LANGUAGE sql IMMUTABLE AS $$ SELECT current_setting('app.relay', true) $$;
CREATE TABLE public.queue (cmd text);
ALTER TABLE public.queue OWNER TO {{mig}};
INSERT INTO public.queue VALUES ('DELETE FROM ledger.entries');
CREATE INDEX queue_relay ON public.queue (public.imm_exec(public.relay_target(), cmd));
-- pgmoat:
SET app.relay = '{{conn}}';
REINDEX TABLE queue;

-- case: generated-column
-- expect: refused
-- why: ADD COLUMN ... GENERATED on an unprotected table computes the column for every row already there.
-- setup:
CREATE FUNCTION public.imm_exec(text, text) RETURNS text AS '$libdir/dblink', 'dblink_exec' LANGUAGE c IMMUTABLE STRICT;
CREATE TABLE public.queue (cmd text);
ALTER TABLE public.queue OWNER TO {{mig}};
INSERT INTO public.queue VALUES ('DELETE FROM ledger.entries');
-- pgmoat:
ALTER TABLE queue ADD COLUMN result text GENERATED ALWAYS AS (imm_exec('{{conn}}', cmd)) STORED;

-- case: row-level-security-policy
-- expect: refused
-- why: A policy on an unprotected table (forced, so that it applies to its owners too) runs dblink_exec for each row a SELECT reads.
-- setup:
CREATE EXTENSION dblink;
ALTER TABLE scratch ENABLE ROW LEVEL SECURITY;
ALTER TABLE scratch FORCE ROW LEVEL SECURITY;
CREATE POLICY relay ON scratch USING (dblink_exec('{{conn}}', 'DELETE FROM ledger.entries') IS NOT NULL);
-- pgmoat:
SELECT count(*) FROM scratch;

-- case: postgres-fdw-loopback
-- expect: refused
-- why: A foreign table that is the ledger itself, through a loopback server: DELETE of a table pgmoat does not protect.
-- setup:
CREATE EXTENSION postgres_fdw;
CREATE SERVER loopback FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host '127.0.0.1', port '{{port}}', dbname '{{db}}');
CREATE USER MAPPING FOR PUBLIC SERVER loopback OPTIONS (user '{{mig}}', password '{{migpw}}');
CREATE FOREIGN TABLE public.entries_mirror (id bigint, account_id bigint) SERVER loopback OPTIONS (schema_name 'ledger', table_name 'entries');
ALTER FOREIGN TABLE public.entries_mirror OWNER TO {{mig}};
-- pgmoat:
DELETE FROM entries_mirror;

-- case: contrib-c-trigger
-- expect: refused
-- why: refint's check_foreign_key (C, from contrib) on scratch cascades a delete of scratch into the ledger.
-- setup:
CREATE EXTENSION refint;
CREATE TRIGGER scratch_cascade BEFORE DELETE ON scratch FOR EACH ROW
    EXECUTE FUNCTION check_foreign_key(1, 'cascade', 'account_id', 'ledger.entries', 'account_id');
-- pgmoat:
DELETE FROM scratch;

-- case: operator-harmless
-- expect: allowed
-- why: Twin: a new operator and aggregate over built-in text functions.
-- pgmoat:
CREATE OPERATOR public.<+> (LEFTARG = text, RIGHTARG = text, FUNCTION = textcat);
SELECT 'a' <+> 'b';
CREATE AGGREGATE public.concat_all(text) (SFUNC = textcat, STYPE = text, INITCOND = '');
SELECT concat_all(note) FROM scratch;

-- case: renamed-function-harmless
-- expect: allowed
-- why: Twin: renaming a SQL function and calling it by its new name.
-- setup:
SET ROLE {{mig}};
CREATE FUNCTION public.greet() RETURNS text LANGUAGE sql AS $$ SELECT 'hi' $$;
-- pgmoat:
ALTER FUNCTION greet() RENAME TO hello;
SELECT hello();

-- case: default-view-domain-harmless
-- expect: allowed
-- why: Twin: a default, a view and a domain check over built-in functions, fired by INSERT, SELECT and a cast.
-- setup:
SET ROLE {{mig}};
ALTER TABLE scratch ADD COLUMN token text DEFAULT md5(random()::text);
CREATE VIEW public.health AS SELECT count(*) AS n FROM accounts;
CREATE DOMAIN public.short_note AS text CHECK (length(VALUE) < 100);
-- pgmoat:
INSERT INTO scratch (note) VALUES ('hello');
SELECT * FROM health;
SELECT 'x'::short_note;

-- case: index-generated-copy-harmless
-- expect: allowed
-- why: Twin: an expression index, REINDEX, a generated column and COPY FROM STDIN on scratch, with built-in functions.
-- pgmoat:
CREATE INDEX scratch_lower ON scratch (lower(note));
REINDEX TABLE scratch;
ALTER TABLE scratch ADD COLUMN note_upper text GENERATED ALWAYS AS (upper(note)) STORED;
-- copy: copied	7
COPY scratch (note, account_id) FROM STDIN;

-- case: dblink-extension-unused
-- expect: allowed
-- why: Twin: a database where dblink is installed; a SELECT from a view and an INSERT into a table that do not use it.
-- setup:
CREATE EXTENSION dblink;
SET ROLE {{mig}};
CREATE VIEW public.health AS SELECT count(*) AS n FROM accounts;
-- pgmoat:
SELECT * FROM health;
INSERT INTO scratch (note) VALUES ('hello');

-- case: bind-parameter-relays
-- expect: refused
-- why: SELECT 1 with an unused parameter of a domain whose CHECK is dblink_exec of the value: Bind runs it.
-- setup:
CREATE EXTENSION dblink;
CREATE DOMAIN public.checked_sql AS text CHECK (dblink_exec('{{conn}}', VALUE) IS NOT NULL);
-- pgmoat:
-- param: DELETE FROM ledger.entries
-- param-type: public.checked_sql
SELECT 1;
