package rules

import (
	"testing"

	"github.com/pgmoat/pgmoat/internal/pgtest"
)

// TestLiveHarmlessCode: writing or reading a relation whose own code
// pgmoat reads and finds harmless needs no guard; code that does
// something, or that pgmoat cannot read (a rule, a C function), still
// runs under guard.
func TestLiveHarmlessCode(t *testing.T) {
	c := pgtest.Get(t)
	db := c.NewDatabase(t)
	c.Exec(t, db, `
CREATE TABLE public.users (id int PRIMARY KEY, note text);
CREATE FUNCTION public.norm(text) RETURNS text LANGUAGE sql IMMUTABLE AS 'SELECT lower($1)';
CREATE FUNCTION public.stamp() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN NEW.note := public.norm(NEW.note); RETURN NEW; END$$;
CREATE FUNCTION public.wipe() RETURNS text LANGUAGE sql AS 'DELETE FROM public.users RETURNING note';
CREATE TABLE public.t_ok (a text DEFAULT public.norm('X') CHECK (public.norm(a) <> ''), note text);
CREATE INDEX ON public.t_ok ((public.norm(a)));
CREATE TRIGGER s BEFORE INSERT ON public.t_ok FOR EACH ROW EXECUTE FUNCTION public.stamp();
CREATE VIEW public.v_ok AS SELECT public.norm(note) FROM public.users;
CREATE TABLE public.t_bad (a text DEFAULT public.wipe());
CREATE VIEW public.v_bad AS SELECT public.wipe();
CREATE TABLE public.t_rule (a text);
CREATE RULE r AS ON INSERT TO public.t_rule DO ALSO NOTIFY x;
CREATE TABLE public.t_c (a text);
CREATE TRIGGER c BEFORE INSERT ON public.t_c FOR EACH ROW EXECUTE FUNCTION suppress_redundant_updates_trigger();`)
	eng := liveVerifyingEngine(t, c.Connect(t, db), db, "public.users")
	for _, tc := range []struct {
		sql  string
		want Action
	}{
		{"INSERT INTO t_ok (note) VALUES ('A')", Allow},
		{"COPY t_ok (note) FROM STDIN", Allow},
		{"SELECT * FROM v_ok", Allow},
		{"UPDATE t_ok SET note = 'b' WHERE a = 'x'", Allow},
		{"INSERT INTO t_bad DEFAULT VALUES", Verify},
		{"SELECT * FROM v_bad", Verify},
		{"INSERT INTO t_rule VALUES ('a')", Verify},
		{"INSERT INTO t_c VALUES ('a')", Verify},
		{"COPY t_bad FROM STDIN", Block}, // cannot run under guard
	} {
		if r := eng.Judge(liveSession(db), tc.sql); r.Action != tc.want {
			t.Errorf("%q: got %s (%s), want %s", tc.sql, r.Action, sentenceOf(r), tc.want)
		}
	}
}
