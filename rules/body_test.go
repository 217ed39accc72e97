package rules

import "testing"

func TestBodies(t *testing.T) {
	eng := testEngine(t, defaultProtect)
	runCases(t, eng, func() *Session { return knownSession("app") }, []opCase{
		// PL/pgSQL statements and dynamic SQL
		{"DO $$DECLARE r record; BEGIN FOR r IN EXECUTE 'DELETE FROM users RETURNING id' LOOP END LOOP; END$$", Block, OpDeleteAll},
		{"DO $$BEGIN FOR r IN EXECUTE 'SELECT 1' LOOP END LOOP; END$$", Block, OpOpaque}, // does not compile: opaque
		{"DO $$DECLARE r record; BEGIN FOR r IN EXECUTE 'SELECT 1' LOOP END LOOP; END$$", Allow, 0},
		{"DO $$DECLARE c refcursor; BEGIN OPEN c FOR EXECUTE 'SELECT 1'; END$$", Allow, 0},
		{"DO $$DECLARE c refcursor; BEGIN OPEN c FOR EXECUTE format('SELECT %s', 1); END$$", Block, OpOpaque},
		{"DO $$BEGIN EXECUTE format('TRUNCATE %I', 'users'); END$$", Block, OpOpaque},
		{"DO $$BEGIN EXECUTE 'TRUNCATE audit_log'; END$$", Allow, 0},
		{"DO $o$BEGIN EXECUTE $q$DO $i$BEGIN EXECUTE 'DROP TABLE billing.payments'; END$i$ $q$; END$o$", Block, OpDrop},
		{"DO $$BEGIN IF now() > '2000-01-01' THEN UPDATE billing.invoices SET paid = true; END IF; END$$", Block, OpUpdateAll},
		{"DO $$BEGIN UPDATE billing.invoices SET paid = true WHERE id = 1; END$$", Allow, 0},
		{"DO $$DECLARE n int; BEGIN n := (SELECT count(*) FROM users); END$$", Allow, 0},
		{"DO $$DECLARE n int; BEGIN n := (SELECT dblink_exec('x', 'y')); END$$", Block, OpOpaque},
		{"DO $$BEGIN PERFORM dblink_exec('x', 'y'); END$$", Block, OpOpaque},
		{"DO $$ this is not plpgsql $$", Block, OpOpaque},
		{"DO $$BEGIN SET standard_conforming_strings = off; END$$", Block, OpLexerState},
		// Variables are values, not columns: WHERE v may be true.
		{"DO $$DECLARE v bool := true; BEGIN DELETE FROM users WHERE v; END$$", Block, OpDeleteAll},
		{"DO $$DECLARE v int := 1; BEGIN DELETE FROM users WHERE id = v; END$$", Allow, 0},
		// Function bodies
		{"CREATE FUNCTION f() RETURNS SETOF int LANGUAGE plpgsql AS $$BEGIN RETURN QUERY EXECUTE 'DELETE FROM users RETURNING id'; END$$", Block, OpDeleteAll},
		{"CREATE FUNCTION f() RETURNS void LANGUAGE sql AS 'SELECT 1; TRUNCATE billing.invoices'", Block, OpTruncate},
		{"CREATE FUNCTION f() RETURNS void LANGUAGE sql BEGIN ATOMIC UPDATE users SET note = NULL; END", Block, OpUpdateAll},
		{"CREATE FUNCTION f(i int) RETURNS void LANGUAGE sql BEGIN ATOMIC UPDATE users SET note = NULL WHERE id = i; END", Allow, 0},
		{"CREATE FUNCTION f() RETURNS void LANGUAGE sql AS 'not sql at all'", Block, OpOpaque},
		{"CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql SET search_path = billing AS $$BEGIN TRUNCATE payments; END$$", Block, OpTruncate},
		{"CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql SET search_path = scratch AS $$BEGIN TRUNCATE payments; END$$", Allow, 0},
		{"CREATE FUNCTION f() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN DELETE FROM users WHERE id = OLD.id; RETURN OLD; END$$", Allow, 0},
		{"CREATE FUNCTION f() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN DELETE FROM users; RETURN NULL; END$$", Block, OpDeleteAll},
		{"CREATE FUNCTION f() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN EXECUTE 'DROP TABLE users'; END$$; CREATE TRIGGER t AFTER INSERT ON audit_log EXECUTE FUNCTION f()", Block, OpDrop},
		{"CREATE OR REPLACE PROCEDURE p() LANGUAGE plpgsql AS $$BEGIN COMMIT; DROP SCHEMA billing CASCADE; END$$", Block, OpDrop},
		{"CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$BEGIN RETURN 1; END$$", Allow, 0},
		{"CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql", Block, OpOpaque},
		{"CREATE FUNCTION f() RETURNS void LANGUAGE sql AS $$ DO $d$BEGIN EXECUTE 'DELETE FROM users'; END$d$ $$", Block, OpDeleteAll},
	})
}
