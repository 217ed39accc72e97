package migration

import (
	"strings"
	"testing"
)

// statements returns the non-blank lines of a section, trimmed, so tests
// can say which lines a direction runs.
func statements(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if t := strings.TrimSpace(l); t != "" {
			out = append(out, t)
		}
	}
	return out
}

func TestRead(t *testing.T) {
	cases := []struct {
		name, path, text string
		format           Format
		up, down, verify []string
	}{
		{
			name: "goose", path: "db/20240101_drop.sql", format: Goose,
			text: "-- +goose Up\n-- +goose StatementBegin\nCREATE TABLE t (id int);\n-- +goose StatementEnd\n\n-- +goose Down\nDROP TABLE users;\n",
			up:   []string{"-- +goose StatementBegin", "CREATE TABLE t (id int);", "-- +goose StatementEnd"},
			down: []string{"DROP TABLE users;"},
		},
		{
			name: "goose no transaction, lower case", path: "1.sql", format: Goose,
			text: "-- +goose NO TRANSACTION\n-- +goose up\nCREATE INDEX CONCURRENTLY i ON t (id);\n-- +goose down\nDROP INDEX i;\n",
			up:   []string{"CREATE INDEX CONCURRENTLY i ON t (id);"},
			down: []string{"DROP INDEX i;"},
		},
		{name: "golang-migrate up", path: "m/3_x.up.sql", format: GolangMigrate, text: "DROP TABLE a;\n", up: []string{"DROP TABLE a;"}},
		{name: "golang-migrate down", path: "m/3_x.down.sql", format: GolangMigrate, text: "DROP TABLE a;\n", down: []string{"DROP TABLE a;"}},
		{
			name: "dbmate", path: "db/migrations/20240101_x.sql", format: Dbmate,
			text: "-- migrate:up transaction:false\nALTER TABLE t ADD c int;\n\n-- migrate:down\nALTER TABLE t DROP c;\n",
			up:   []string{"ALTER TABLE t ADD c int;"},
			down: []string{"ALTER TABLE t DROP c;"},
		},
		{name: "flyway versioned", path: "sql/V1.2__init.sql", format: Flyway, text: "CREATE TABLE t (id int);\n", up: []string{"CREATE TABLE t (id int);"}},
		{name: "flyway undo", path: "sql/U1.2__init.sql", format: Flyway, text: "DROP TABLE t;\n", down: []string{"DROP TABLE t;"}},
		{name: "flyway repeatable", path: "sql/R__views.sql", format: Flyway, text: "CREATE OR REPLACE VIEW v AS SELECT 1;\n", up: []string{"CREATE OR REPLACE VIEW v AS SELECT 1;"}},
		{name: "sqitch deploy", path: "proj/deploy/users.sql", format: Sqitch, text: "BEGIN;\nCREATE TABLE u (id int);\nCOMMIT;\n", up: []string{"BEGIN;", "CREATE TABLE u (id int);", "COMMIT;"}},
		{name: "sqitch revert", path: "proj/revert/users.sql", format: Sqitch, text: "DROP TABLE u;\n", down: []string{"DROP TABLE u;"}},
		{name: "sqitch verify", path: "proj/verify/users.sql", format: Sqitch, text: "SELECT id FROM u WHERE false;\n", verify: []string{"SELECT id FROM u WHERE false;"}},
		{
			name: "liquibase", path: "changelog.sql", format: Liquibase,
			text: "--liquibase formatted sql\n\n--changeset alice:1\nCREATE TABLE t (id int);\n--rollback DROP TABLE t;\n\n" +
				"--changeset alice:2 splitStatements:true\n--comment: cleanup\nALTER TABLE users DROP COLUMN legacy;\n/* liquibase rollback\nALTER TABLE users ADD COLUMN legacy int;\n*/\n",
			up:   []string{"CREATE TABLE t (id int);", "--comment: cleanup", "ALTER TABLE users DROP COLUMN legacy;"},
			down: []string{"DROP TABLE t;", "ALTER TABLE users ADD COLUMN legacy int;"},
		},
		{
			name: "plain psql script", path: "dump.sql", format: Plain,
			text: "\\restrict abc\nSET statement_timeout = 0;\nCOPY public.users (id, name) FROM stdin;\n1\tDROP TABLE users;\n\\.\n\nSELECT 'a\\b', $$x\\y$$, E'\\';';\n\\unrestrict abc\n",
			up:   []string{"SET statement_timeout = 0;", "COPY public.users (id, name) FROM stdin;", `SELECT 'a\b', $$x\y$$, E'\';';`},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := Detect(c.path, c.text); got != c.format {
				t.Errorf("Detect = %s, want %s", got, c.format)
			}
			f, err := Read(c.path, c.text, Auto)
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range []struct {
				d     Direction
				lines []string
			}{{Up, c.up}, {Down, c.down}, {Verify, c.verify}} {
				s, ok := f.Section(want.d)
				if ok != (want.lines != nil) {
					t.Errorf("%s section present %v, want %v", want.d, ok, want.lines != nil)
					continue
				}
				if !ok {
					continue
				}
				if len(s.SQL) != len(c.text) {
					t.Errorf("%s section is %d bytes, the file %d: positions would move", want.d, len(s.SQL), len(c.text))
				}
				if got := statements(s.SQL); strings.Join(got, "|") != strings.Join(want.lines, "|") {
					t.Errorf("%s section:\n got %q\nwant %q", want.d, got, want.lines)
				}
			}
		})
	}
}

func TestParseFormat(t *testing.T) {
	if f, err := ParseFormat("goose"); err != nil || f != Goose {
		t.Errorf("goose: %v %v", f, err)
	}
	if _, err := ParseFormat("rails"); err == nil || !strings.Contains(err.Error(), "golang-migrate") {
		t.Errorf("rails: %v", err)
	}
}
