package rules

import (
	"testing"
)

// TestLiveGuardClassification judges statements on the corpus database in
// verify mode, with the catalog loaded as the proxy loads it: what is
// proven harmless is allowed, what only running it can settle is Verify,
// what is certain or escapes the transaction is blocked.
func TestLiveGuardClassification(t *testing.T) {
	c, db := liveCorpusDB(t)
	c.Exec(t, db, `
CREATE FUNCTION public.wipe_users() RETURNS void LANGUAGE sql AS 'DELETE FROM public.users';
CREATE FUNCTION public.run(q text) RETURNS void LANGUAGE plpgsql AS $$BEGIN EXECUTE q; END$$;
CREATE FUNCTION public.harmless(i int) RETURNS int LANGUAGE sql AS 'SELECT i + 1';
CREATE FUNCTION public.del_one(i int) RETURNS void LANGUAGE plpgsql AS $$BEGIN DELETE FROM public.users WHERE id = i; END$$;
CREATE FUNCTION public.innocent(text, text) RETURNS text LANGUAGE c AS '$libdir/dblink', 'dblink_exec';
CREATE TABLE public.events (id int, at timestamptz);
CREATE FUNCTION public.trg() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$;
CREATE TRIGGER t BEFORE INSERT ON public.scratch FOR EACH ROW EXECUTE FUNCTION public.trg();
CREATE FUNCTION public.trg_del() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN DELETE FROM public.users WHERE id = NEW.id; RETURN NEW; END$$;
CREATE TRIGGER t BEFORE INSERT ON public.events FOR EACH ROW EXECUTE FUNCTION public.trg_del();
CREATE EXTENSION postgres_fdw;
CREATE SERVER elsewhere FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host '127.0.0.1', dbname 'postgres');
CREATE FOREIGN TABLE public.remote_users (id int) SERVER elsewhere OPTIONS (table_name 'users');
CREATE SEQUENCE public.ref_seq;
CREATE FUNCTION public.next_ref() RETURNS bigint LANGUAGE sql AS $$SELECT nextval('public.ref_seq')$$;
CREATE SEQUENCE public.free_seq;`)
	conn := c.Connect(t, db)
	cat, _ := liveCatalog(t, conn)
	eng := NewEngine(corpusPolicy(t), EngineOptions{Verify: true})
	eng.SetCatalog(db, cat)
	for _, tc := range []struct {
		sql  string
		want Action
	}{
		{"SELECT * FROM users WHERE id = 1", Allow},
		{"UPDATE users SET note = 'x' WHERE id = 1", Allow},
		{"UPDATE users SET note = 'x' WHERE id = $1", Allow},
		{"DELETE FROM users WHERE id IN (1, 2, 3)", Allow},
		{"INSERT INTO users (id, org_id, email) VALUES (100, 1, 'a@b.c')", Allow},
		{"INSERT INTO users (id, org_id, email) VALUES (1, 1, 'a@x.io') ON CONFLICT (id) DO UPDATE SET email = EXCLUDED.email", Allow},
		{"DELETE FROM scratch WHERE id > 0", Allow},
		{"SELECT harmless(1)", Allow},
		{"UPDATE users SET note = 'x' WHERE email = 'u1@example.com'", Verify},
		{"DELETE FROM users WHERE id > 0", Verify},
		{"DELETE FROM users WHERE id = ANY($1)", Verify},
		{"DELETE FROM orgs WHERE id = 1", Verify}, // ON DELETE CASCADE into users
		{"SELECT run('DROP TABLE users')", Verify},
		{"SELECT del_one(id) FROM users", Verify},
		{"DO $$BEGIN EXECUTE 'DROP TABLE ' || 'users'; END$$", Block}, // a constant, read as SQL
		{"DO $$BEGIN EXECUTE 'DROP TABLE ' || chr(117) || 'sers'; END$$", Verify},
		{"DO $$DECLARE r record; BEGIN FOR r IN SELECT id FROM users LOOP DELETE FROM users WHERE id = r.id; END LOOP; END$$", Verify},
		{"INSERT INTO scratch VALUES (1)", Allow},        // its trigger's body does nothing pgmoat reports
		{"INSERT INTO events VALUES (1, now())", Verify}, // its trigger deletes from users: which rows, only running it tells
		{"SELECT made_since_snapshot(1)", Verify},
		{"ALTER TYPE user_status RENAME VALUE 'active' TO 'gone'", Verify},
		{"DROP DOMAIN email_addr CASCADE", Verify},
		{"SELECT wipe_users()", Block},
		{"SELECT innocent('dbname=appdb', 'DROP TABLE users')", Block},
		{"DELETE FROM users", Block},
		{"VACUUM users", Allow},
		// A cursor WITH HOLD runs its query to the end at COMMIT, where
		// no guard can follow it: what it may do counts as certain.
		{"DECLARE c CURSOR WITH HOLD FOR SELECT del_one(id) FROM users", Block},
		{"DECLARE c CURSOR WITH HOLD FOR SELECT id, harmless(id) FROM users", Allow},
		{"DECLARE c CURSOR FOR SELECT del_one(id) FROM users", Verify},
		// A foreign table's rows are another server's: a write to one
		// is outside any guard.
		{"DELETE FROM remote_users WHERE id = 1", Block},
		{"INSERT INTO remote_users VALUES (1)", Block},
		{"SELECT * FROM remote_users", Allow},
		// A setting pgmoat cannot name runs under guard, which compares
		// the settings that matter; the search_path is read back after.
		{"SELECT set_config($1, $2, false)", Verify},
		{"SELECT set_config(name, 'x', false) FROM pg_settings WHERE name LIKE 'search%'", Verify},
		// Which locks a prepared transaction keeps, the server says.
		{"PREPARE TRANSACTION 'x'", Verify},
		// A sequence a function uses may feed a protected table through
		// it; pg_depend does not say.
		{"SELECT setval('ref_seq', 1)", Block},
		{"SELECT setval('free_seq', 1)", Allow},
	} {
		r := eng.Judge(NewSession(Identity{User: "postgres", Database: db}), tc.sql)
		if r.Action != tc.want {
			t.Errorf("%q: got %s, want %s", tc.sql, r.Action, tc.want)
			for _, v := range r.Statements {
				t.Logf("   %s %q %+v", v.Action, v.Sentence, v.Effects)
			}
		}
	}
}
