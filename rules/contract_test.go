package rules

import (
	"testing"
)

// contractDDL is the schema of the contract tests that use a catalog:
// what pgmoat check --schema would read.
const contractDDL = `
CREATE TABLE public.users (id serial PRIMARY KEY, email text, note text, created timestamptz DEFAULT now());
CREATE UNIQUE INDEX users_email_key ON public.users (email);
CREATE INDEX users_created_idx ON public.users (created);
CREATE TABLE public.orders (id bigint GENERATED ALWAYS AS IDENTITY, user_id int, total numeric);
CREATE SEQUENCE public.global_ids;
CREATE TABLE billing.invoices (id int PRIMARY KEY DEFAULT nextval('public.global_ids'), amount numeric);
CREATE TABLE public.scratch (id int);
CREATE FUNCTION public.touch() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN NEW.note := 'x'; RETURN NEW; END$$;
CREATE TRIGGER users_touch BEFORE UPDATE ON public.users FOR EACH ROW EXECUTE FUNCTION public.touch();
CREATE FUNCTION public.norm(text) RETURNS text LANGUAGE sql IMMUTABLE AS 'SELECT lower($1)';
CREATE FUNCTION public.other(text) RETURNS text LANGUAGE sql AS 'SELECT $1';
ALTER TABLE public.users ADD CONSTRAINT users_norm CHECK (public.norm(email) <> '');
CREATE PUBLICATION app_pub FOR TABLE public.users;
CREATE PUBLICATION scratch_pub FOR TABLE public.scratch;
`

func contractEngine(t *testing.T) *Engine {
	t.Helper()
	eng := testEngine(t, defaultProtect)
	cat, err := CatalogFromSQL(contractDDL)
	if err != nil {
		t.Fatal(err)
	}
	eng.SetCatalog("app", cat)
	return eng
}

// TestContractStatic: without a catalog (pgmoat check without --schema),
// what a statement says about a protected table's contract is judged
// from the statement, each with a harmless twin.
func TestContractStatic(t *testing.T) {
	eng := testEngine(t, defaultProtect)
	runCases(t, eng, func() *Session { return knownSession("app") }, []opCase{
		// privileges
		{"REVOKE SELECT ON users FROM app", Block, OpContract},
		{"REVOKE UPDATE (email) ON TABLE public.users FROM app", Block, OpContract},
		{"REVOKE ALL ON billing.invoices FROM PUBLIC CASCADE", Block, OpContract},
		{"REVOKE USAGE ON SCHEMA billing FROM app", Block, OpContract},
		{"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM app", Block, OpContract},
		{"REVOKE USAGE ON ALL SEQUENCES IN SCHEMA billing FROM app", Block, OpContract},
		{"REVOKE USAGE ON SEQUENCE users_id_seq FROM app", Block, OpContract},
		{"REVOKE app_group FROM app", Block, OpContract},
		{"GRANT SELECT ON users TO app", Allow, 0},
		{"GRANT app_group TO app", Allow, 0},
		{"REVOKE SELECT ON scratch FROM app", Allow, 0},
		{"REVOKE USAGE ON SCHEMA scratch FROM app", Allow, 0},
		{"REVOKE USAGE ON SEQUENCE scratch_id_seq FROM app", Allow, 0},
		{"ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE SELECT ON TABLES FROM app", Allow, 0},
		{"REVOKE USAGE ON DOMAIN email_addr FROM PUBLIC", Allow, 0},
		// row-level security
		{"ALTER TABLE users ENABLE ROW LEVEL SECURITY", Block, OpContract},
		{"ALTER TABLE users FORCE ROW LEVEL SECURITY", Block, OpContract},
		{"ALTER TABLE billing.invoices DISABLE ROW LEVEL SECURITY", Block, OpContract},
		{"CREATE POLICY p ON users USING (false)", Block, OpContract},
		{"ALTER POLICY p ON public.users USING (id < 10)", Block, OpContract},
		{"DROP POLICY p ON users", Block, OpContract},
		{"ALTER TABLE scratch ENABLE ROW LEVEL SECURITY", Allow, 0},
		{"CREATE POLICY p ON scratch USING (false)", Allow, 0},
		{"DROP POLICY IF EXISTS p ON scratch", Allow, 0},
		// constraints and unique indexes
		{"ALTER TABLE users ADD CONSTRAINT c CHECK (id > 100) NOT VALID", Block, OpContract},
		{"ALTER TABLE users ADD CHECK (email <> '')", Block, OpContract},
		{"ALTER TABLE users ALTER COLUMN note SET NOT NULL", Block, OpContract},
		{"ALTER TABLE users ALTER COLUMN note DROP NOT NULL", Block, OpContract},
		{"ALTER TABLE users ADD CONSTRAINT u UNIQUE (email)", Block, OpContract},
		{"ALTER TABLE users ADD CONSTRAINT x EXCLUDE USING gist (id WITH =)", Block, OpContract},
		{"ALTER TABLE users ADD CONSTRAINT u UNIQUE USING INDEX users_note_idx", Block, OpContract},
		{"ALTER TABLE users ADD FOREIGN KEY (id) REFERENCES scratch (id)", Block, OpContract},
		{"ALTER TABLE users ALTER CONSTRAINT fk DEFERRABLE", Block, OpContract},
		{"CREATE UNIQUE INDEX ON users (note)", Block, OpContract},
		{"CREATE UNIQUE INDEX CONCURRENTLY u ON users (lower(note))", Block, OpContract},
		{"ALTER TABLE users ADD COLUMN code text NOT NULL", Block, OpContract},
		{"ALTER TABLE users ADD COLUMN code text NOT NULL DEFAULT 'x' UNIQUE", Block, OpContract},
		{"ALTER TABLE users ADD COLUMN org int DEFAULT 1 REFERENCES orgs (id)", Block, OpContract},
		{"ALTER TABLE users ADD COLUMN code text UNIQUE NULLS NOT DISTINCT", Block, OpContract},
		{"ALTER TABLE users ADD COLUMN code int CHECK (code > 0)", Block, OpContract},
		// additive
		{"ALTER TABLE users ADD COLUMN nickname text", Allow, 0},
		{"ALTER TABLE users ADD COLUMN code text UNIQUE", Allow, 0},
		{"ALTER TABLE users ADD COLUMN org int REFERENCES orgs (id) ON DELETE CASCADE", Allow, 0},
		{"ALTER TABLE users ADD COLUMN flags int NOT NULL DEFAULT 0", Allow, 0},
		{"ALTER TABLE users ADD COLUMN seen timestamptz DEFAULT now()", Allow, 0},
		{"ALTER TABLE users ADD COLUMN n bigserial", Allow, 0},
		{"ALTER TABLE users ADD COLUMN k int GENERATED ALWAYS AS IDENTITY", Allow, 0},
		{"CREATE INDEX ON users (note)", Allow, 0},
		{"CREATE INDEX CONCURRENTLY users_note_idx ON users (lower(note))", Allow, 0},
		{"ALTER INDEX users_note_idx RENAME TO users_note_lower_idx", Allow, 0},
		{"ALTER TABLE users VALIDATE CONSTRAINT c", Allow, 0},
		{"ALTER TABLE users ALTER COLUMN note SET STATISTICS 100", Allow, 0},
		{"COMMENT ON TABLE users IS 'people'", Allow, 0},
		{"ANALYZE users", Allow, 0},
		{"VACUUM (ANALYZE) users", Allow, 0},
		{"ALTER TABLE scratch ADD CONSTRAINT c CHECK (id > 0) NOT VALID", Allow, 0},
		{"ALTER TABLE scratch ALTER COLUMN id SET NOT NULL", Allow, 0},
		{"CREATE UNIQUE INDEX ON scratch (id)", Allow, 0},
		// defaults and identity
		{"ALTER TABLE users ALTER COLUMN id DROP DEFAULT", Block, OpContract},
		{"ALTER TABLE users ALTER COLUMN note SET DEFAULT 'x'", Block, OpContract},
		{"ALTER TABLE users ALTER COLUMN id DROP IDENTITY IF EXISTS", Block, OpContract},
		{"ALTER TABLE users ALTER COLUMN id RESTART WITH 1", Block, OpContract},
		{"ALTER TABLE users ALTER COLUMN id SET GENERATED BY DEFAULT", Block, OpContract},
		{"ALTER TABLE users ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY", Block, OpContract},
		{"ALTER TABLE scratch ALTER COLUMN id DROP DEFAULT", Allow, 0},
		// sequences: without a catalog, by PostgreSQL's naming
		{"ALTER SEQUENCE users_id_seq RESTART WITH 1", Block, OpContract},
		{"ALTER SEQUENCE public.users_id_seq INCREMENT BY -1", Block, OpContract},
		{"ALTER SEQUENCE users_id_seq MAXVALUE 10", Block, OpContract},
		{"ALTER SEQUENCE users_id_seq CYCLE", Block, OpContract},
		{"ALTER SEQUENCE users_id_seq OWNED BY NONE", Block, OpContract},
		{"ALTER SEQUENCE users_id_seq AS smallint", Block, OpContract},
		{"ALTER SEQUENCE billing.anything RESTART", Block, OpContract},
		{"SELECT setval('users_id_seq', 1)", Block, OpContract},
		{"SELECT setval('public.users_id_seq'::regclass, 1, false)", Block, OpContract},
		{`SELECT setval('"users_id_seq"', 1)`, Block, OpContract},
		{"SELECT setval(pg_get_serial_sequence('users', 'id'), 1)", Block, OpContract},
		{"SELECT setval(s, 1) FROM seqs", Block, OpContract},
		{"DO $$BEGIN PERFORM setval('users_id_seq', 1); END$$", Block, OpContract},
		{"SELECT setval(16385, 1)", Block, OpContract}, // an OID: which sequence, pgmoat cannot tell
		{"ALTER SEQUENCE users_id_seq OWNER TO mallory", Block, OpContract},
		{"ALTER SEQUENCE users_id_seq RENAME TO ids", Block, OpContract},
		{"ALTER SEQUENCE users_id_seq SET SCHEMA elsewhere", Block, OpContract},
		{"ALTER SEQUENCE scratch_id_seq OWNER TO mallory", Allow, 0},
		{"ALTER SEQUENCE scratch_id_seq RENAME TO ids", Allow, 0},
		{"ALTER SEQUENCE users_id_seq CACHE 10", Allow, 0},
		{"ALTER SEQUENCE users_id_seq START WITH 100", Allow, 0},
		{"ALTER SEQUENCE scratch_id_seq RESTART", Allow, 0},
		{"SELECT setval('scratch_id_seq', 1)", Allow, 0},
		{"SELECT setval(pg_get_serial_sequence('scratch', 'id'), 1)", Allow, 0},
		{"SELECT nextval('users_id_seq')", Allow, 0},
		// triggers and rules
		{"ALTER TABLE users DISABLE TRIGGER ALL", Block, OpContract},
		{"ALTER TABLE users DISABLE TRIGGER users_touch", Block, OpContract},
		{"ALTER TABLE users ENABLE REPLICA TRIGGER users_touch", Block, OpContract},
		{"ALTER TABLE users DISABLE RULE r", Block, OpContract},
		{"CREATE TRIGGER t BEFORE INSERT ON users FOR EACH ROW EXECUTE FUNCTION f()", Block, OpContract},
		{"CREATE OR REPLACE TRIGGER t BEFORE INSERT ON users FOR EACH ROW EXECUTE FUNCTION f()", Block, OpContract},
		{"DROP TRIGGER IF EXISTS t ON public.users", Block, OpContract},
		{"CREATE RULE r AS ON INSERT TO users DO INSTEAD NOTHING", Block, OpContract},
		{"CREATE OR REPLACE RULE r AS ON UPDATE TO billing.invoices DO ALSO NOTIFY x", Block, OpContract},
		{"DROP RULE r ON users", Block, OpContract},
		{"ALTER TRIGGER t ON users RENAME TO t2", Allow, 0},
		{"CREATE TRIGGER t BEFORE INSERT ON scratch FOR EACH ROW EXECUTE FUNCTION f()", Allow, 0},
		{"ALTER TABLE scratch DISABLE TRIGGER ALL", Allow, 0},
		{"CREATE RULE r AS ON INSERT TO scratch DO INSTEAD NOTHING", Allow, 0},
		// replica identity, publications, owners
		{"ALTER TABLE users REPLICA IDENTITY NOTHING", Block, OpContract},
		{"CREATE PUBLICATION p FOR TABLE users", Block, OpContract},
		{"CREATE PUBLICATION p FOR TABLE scratch, billing.invoices", Block, OpContract},
		{"CREATE PUBLICATION p FOR ALL TABLES", Block, OpContract},
		{"CREATE PUBLICATION p FOR TABLES IN SCHEMA billing", Block, OpContract},
		{"ALTER PUBLICATION p ADD TABLE users", Block, OpContract},
		{"ALTER PUBLICATION p DROP TABLE public.users", Block, OpContract},
		{"ALTER TABLE users OWNER TO mallory", Block, OpContract},
		{"ALTER SCHEMA billing OWNER TO mallory", Block, OpContract},
		{"REASSIGN OWNED BY app_owner TO mallory", Block, OpContract},
		{"ALTER TABLE scratch REPLICA IDENTITY FULL", Allow, 0},
		{"CREATE PUBLICATION p FOR TABLE scratch", Allow, 0},
		{"ALTER PUBLICATION p ADD TABLE scratch", Allow, 0},
		{"ALTER TABLE scratch OWNER TO mallory", Allow, 0},
		// domains: only running it tells which tables use one
		{"ALTER DOMAIN email_addr ADD CONSTRAINT c CHECK (VALUE LIKE '%@%.%') NOT VALID", Block, OpContract},
	})
}

// TestContractOfNewTables: a table the session made itself has no
// application relying on it yet; a migration adds its keys, defaults and
// triggers after creating it. CREATE TABLE IF NOT EXISTS of a name that
// may exist does not count as making it.
func TestContractOfNewTables(t *testing.T) {
	eng := testEngine(t, defaultProtect)
	runCases(t, eng, func() *Session { return knownSession("app") }, []opCase{
		{"CREATE TABLE billing.refunds (id int, amount numeric); ALTER TABLE billing.refunds ADD PRIMARY KEY (id); CREATE UNIQUE INDEX ON billing.refunds (amount); ALTER TABLE billing.refunds ENABLE ROW LEVEL SECURITY", Allow, 0},
		{"CREATE TABLE billing.refunds (id int); CREATE TRIGGER t BEFORE INSERT ON billing.refunds FOR EACH ROW EXECUTE FUNCTION f()", Allow, 0},
		{"CREATE TABLE IF NOT EXISTS users (id int); ALTER TABLE users ENABLE ROW LEVEL SECURITY", Block, OpContract},
		{"CREATE TABLE billing.refunds (id int); ALTER TABLE billing.invoices ADD PRIMARY KEY (id)", Block, OpContract},
	})
	// A plain dump restored into an empty database: the protected tables
	// are the script's own, and so are their sequences and the schema's
	// privileges.
	const restore = `CREATE TABLE public.users (id integer NOT NULL, email text);
CREATE SEQUENCE public.users_id_seq AS integer START WITH 1 INCREMENT BY 1;
ALTER SEQUENCE public.users_id_seq OWNED BY public.users.id;
ALTER TABLE ONLY public.users ALTER COLUMN id SET DEFAULT nextval('public.users_id_seq'::regclass);
SELECT pg_catalog.setval('public.users_id_seq', 3, true);
ALTER TABLE ONLY public.users ADD CONSTRAINT users_pkey PRIMARY KEY (id);
ALTER TABLE public.users OWNER TO app_owner;
CREATE SCHEMA billing;
CREATE TABLE billing.invoices (id serial PRIMARY KEY);
SELECT pg_catalog.setval('billing.invoices_id_seq', 20, true);
REVOKE USAGE ON SCHEMA public FROM PUBLIC;
REVOKE ALL ON SCHEMA billing FROM PUBLIC;`
	if r := eng.JudgeScript(knownSession("app"), restore); r.Action != Allow {
		t.Errorf("restore of a plain dump: %s (%s)", r.Action, sentenceOf(r))
	}
	if r := eng.JudgeScript(knownSession("app"), "CREATE TABLE public.users (id int); REVOKE USAGE ON SCHEMA billing FROM PUBLIC"); r.Action != Block {
		t.Errorf("REVOKE on a schema whose protected tables the script did not make: %s", r.Action)
	}
	// Across messages, with a catalog: the snapshot does not have it.
	cat, err := CatalogFromSQL(contractDDL)
	if err != nil {
		t.Fatal(err)
	}
	eng.SetCatalog("app", cat)
	s := knownSession("app")
	if refused := runAllowed(eng, s, "CREATE TABLE billing.refunds (id int)"); len(refused) > 0 {
		t.Fatalf("refused %q", refused)
	}
	if r := eng.Judge(s, "ALTER TABLE billing.refunds ADD PRIMARY KEY (id)"); r.Action != Allow {
		t.Errorf("key of the session's own table: %s %q", r.Action, r.Decision().Sentence)
	}
	if r := eng.Judge(knownSession("app"), "ALTER TABLE billing.refunds ADD PRIMARY KEY (id)"); r.Action != Block {
		t.Errorf("key of another session's table: %s", r.Action)
	}
	// The catalog is read again after DDL (the proxy does): the table the
	// session made is then in it, and still the session's own. One made
	// with IF NOT EXISTS may have been there before: it is not.
	after, err := CatalogFromSQL(contractDDL + "; CREATE TABLE billing.refunds (id int); CREATE TABLE billing.maybe (id int)")
	if err != nil {
		t.Fatal(err)
	}
	if refused := runAllowed(eng, s, "CREATE TABLE IF NOT EXISTS billing.maybe (id int)"); len(refused) > 0 {
		t.Fatalf("refused %q", refused)
	}
	eng.SetCatalog("app", after)
	if r := eng.Judge(s, "ALTER TABLE billing.refunds OWNER TO app_owner"); r.Action != Allow {
		t.Errorf("owner of the session's own table, after the catalog has it: %s %q", r.Action, r.Decision().Sentence)
	}
	if r := eng.Judge(s, "ALTER TABLE billing.maybe OWNER TO app_owner"); r.Action != Block {
		t.Errorf("owner of a table made IF NOT EXISTS, after the catalog has it: %s", r.Action)
	}
	// A schema whose protected tables the snapshot does not have relies
	// on nothing; one whose protected table it has does.
	empty := testEngine(t, PolicyConfig{Protect: []string{"public.users", "billing.invoices"}})
	emptyCat, _ := CatalogFromSQL("CREATE SCHEMA billing; CREATE TABLE public.other (id int)")
	empty.SetCatalog("app", emptyCat)
	if r := empty.Judge(knownSession("app"), "REVOKE USAGE ON SCHEMA public FROM PUBLIC"); r.Action != Allow {
		t.Errorf("REVOKE on a schema without protected tables: %s (%s)", r.Action, sentenceOf(r))
	}
	full := testEngine(t, PolicyConfig{Protect: []string{"public.users", "billing.invoices"}})
	full.SetCatalog("app", cat)
	if r := full.Judge(knownSession("app"), "REVOKE USAGE ON SCHEMA public FROM PUBLIC"); r.Action != Block {
		t.Errorf("REVOKE on a schema with a protected table: %s", r.Action)
	}
}

// TestContractWithCatalog: with a catalog (or --schema DDL), pgmoat knows
// which sequences feed which tables, which indexes are unique, which
// functions a table calls and which tables a publication holds.
func TestContractWithCatalog(t *testing.T) {
	eng := contractEngine(t)
	runCases(t, eng, func() *Session { return knownSession("app") }, []opCase{
		{"ALTER SEQUENCE global_ids RESTART", Block, OpContract}, // feeds billing.invoices
		{"SELECT setval('public.global_ids', 1)", Block, OpContract},
		{"SELECT setval('orders_id_seq', 1)", Allow, 0}, // identity of public.orders, unprotected
		{"REVOKE USAGE ON SEQUENCE global_ids FROM app", Block, OpContract},
		{"REVOKE USAGE ON ALL SEQUENCES IN SCHEMA public FROM app", Block, OpContract},
		{"DROP INDEX users_email_key", Block, OpContract},
		{"DROP INDEX public.users_pkey", Block, OpContract},
		{"DROP INDEX users_created_idx", Allow, 0},
		{"CREATE OR REPLACE FUNCTION public.touch() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NULL; END$$", Block, OpContract},
		{"CREATE OR REPLACE FUNCTION norm(text) RETURNS text LANGUAGE sql IMMUTABLE AS 'SELECT upper($1)'", Block, OpContract},
		{"ALTER FUNCTION public.norm(text) STABLE", Block, OpContract},
		{"ALTER FUNCTION public.touch() OWNER TO mallory", Block, OpContract},
		{"REVOKE EXECUTE ON FUNCTION public.touch() FROM PUBLIC", Block, OpContract},
		{"REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA public FROM PUBLIC", Block, OpContract},
		{"CREATE OR REPLACE FUNCTION public.other(text) RETURNS text LANGUAGE sql AS 'SELECT upper($1)'", Allow, 0},
		{"REVOKE EXECUTE ON FUNCTION public.other(text) FROM PUBLIC", Allow, 0},
		{"ALTER FUNCTION public.touch() RENAME TO touch2", Allow, 0}, // triggers hold the function, not its name
		{"ALTER PUBLICATION app_pub SET (publish = 'insert')", Block, OpContract},
		{"DROP PUBLICATION app_pub", Block, OpContract},
		{"ALTER PUBLICATION app_pub SET TABLE public.scratch", Block, OpContract},
		{"ALTER PUBLICATION scratch_pub SET (publish = 'insert')", Allow, 0},
		{"DROP PUBLICATION scratch_pub", Allow, 0},
	})
	// pgmoat check --schema does not know every index (it is not
	// strict); the proxy leaves an index it does not know to the guard.
	if r := eng.JudgeScript(knownSession("app"), "DROP INDEX IF EXISTS never_heard_of"); r.Action != Allow {
		t.Errorf("DROP INDEX of an index the schema does not have, in pgmoat check: %s", r.Action)
	}
	verifying := NewEngine(eng.Policy(), EngineOptions{CacheBytes: -1, Verify: true})
	cat, _ := CatalogFromSQL(contractDDL)
	verifying.SetCatalog("app", cat)
	if r := verifying.Judge(knownSession("app"), "DROP INDEX IF EXISTS never_heard_of"); r.Action != Verify {
		t.Errorf("DROP INDEX of an unknown index in the proxy: %s", r.Action)
	}
}
