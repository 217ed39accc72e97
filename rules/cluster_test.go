package rules

import (
	"testing"
	"time"
)

// TestClusterAdmin: statements that lock applications out of everything
// at once are cluster_admin, blocked by default while anything is
// protected; each has a harmless twin that passes.
func TestClusterAdmin(t *testing.T) {
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	p, err := Compile(defaultProtect)
	if err != nil {
		t.Fatal(err)
	}
	eng := NewEngine(p, EngineOptions{CacheBytes: -1, Clock: func() time.Time { return now }})
	runCases(t, eng, func() *Session { return knownSession("app") }, []opCase{
		{"ALTER DATABASE app CONNECTION LIMIT 0", Block, OpClusterAdmin},
		{"ALTER DATABASE app WITH CONNECTION LIMIT 3", Block, OpClusterAdmin},
		{"ALTER DATABASE app ALLOW_CONNECTIONS false", Block, OpClusterAdmin},
		{"ALTER DATABASE app WITH ALLOW_CONNECTIONS = 0", Block, OpClusterAdmin},
		{"ALTER DATABASE app CONNECTION LIMIT -1", Allow, 0},
		{"ALTER DATABASE app CONNECTION LIMIT 500", Allow, 0},
		{"ALTER DATABASE app ALLOW_CONNECTIONS true", Allow, 0},
		{"ALTER DATABASE app IS_TEMPLATE true", Allow, 0},
		{"REVOKE CONNECT ON DATABASE app FROM PUBLIC", Block, OpClusterAdmin},
		{"GRANT CONNECT ON DATABASE app TO app", Allow, 0},
		{"ALTER ROLE app NOLOGIN", Block, OpClusterAdmin},
		{"ALTER USER app WITH NOLOGIN", Block, OpClusterAdmin},
		{"ALTER ROLE app NOINHERIT", Block, OpClusterAdmin},
		{"ALTER ROLE app NOSUPERUSER", Block, OpClusterAdmin},
		{"ALTER ROLE app NOBYPASSRLS", Block, OpClusterAdmin},
		{"ALTER ROLE app PASSWORD NULL", Block, OpClusterAdmin},
		{"ALTER ROLE app CONNECTION LIMIT 0", Block, OpClusterAdmin},
		{"ALTER ROLE app VALID UNTIL '2020-01-01'", Block, OpClusterAdmin},
		{"ALTER ROLE app VALID UNTIL '2025-06-01 18:00:00+00'", Block, OpClusterAdmin}, // within a day
		{"ALTER ROLE app VALID UNTIL 'yesterday'", Block, OpClusterAdmin},
		{"ALTER ROLE app VALID UNTIL '-infinity'", Block, OpClusterAdmin},
		{"ALTER ROLE app VALID UNTIL 'whenever'", Block, OpClusterAdmin},
		{"ALTER ROLE app RENAME TO app_old", Block, OpClusterAdmin},
		{"DROP ROLE IF EXISTS app", Block, OpClusterAdmin},
		{"ALTER GROUP app_group DROP USER app", Block, OpContract},
		{"ALTER ROLE app LOGIN", Allow, 0},
		{"ALTER ROLE app INHERIT", Allow, 0},
		{"ALTER ROLE app PASSWORD 'new secret'", Allow, 0}, // the session's own
		{"ALTER USER CURRENT_USER PASSWORD 'new secret'", Allow, 0},
		{"ALTER ROLE reporter PASSWORD 'new secret'", Block, OpClusterAdmin},
		{"ALTER USER reporter WITH ENCRYPTED PASSWORD 'SCRAM-SHA-256$4096:x'", Block, OpClusterAdmin},
		{"ALTER ROLE app CONNECTION LIMIT -1", Allow, 0},
		{"ALTER ROLE app CONNECTION LIMIT 50", Allow, 0},
		{"ALTER ROLE app VALID UNTIL 'infinity'", Allow, 0},
		{"ALTER ROLE app VALID UNTIL '2030-01-01'", Allow, 0},
		{"ALTER GROUP app_group ADD USER app", Allow, 0},
		{"CREATE ROLE reporter LOGIN", Allow, 0},
		// Settings every new session gets.
		{"ALTER DATABASE app SET default_transaction_read_only = on", Block, OpClusterAdmin},
		{"ALTER ROLE app SET default_transaction_read_only TO true", Block, OpClusterAdmin},
		{"ALTER ROLE app IN DATABASE app SET search_path = nowhere", Block, OpClusterAdmin},
		{"ALTER DATABASE app RESET search_path", Block, OpClusterAdmin},
		{"ALTER ROLE app RESET ALL", Block, OpClusterAdmin},
		{"ALTER ROLE ALL SET session_replication_role = replica", Block, OpClusterAdmin},
		{"ALTER ROLE app SET statement_timeout = 1", Block, OpClusterAdmin},
		{"ALTER ROLE app SET statement_timeout = '500ms'", Block, OpClusterAdmin},
		{"ALTER ROLE app SET idle_session_timeout = '10ms'", Block, OpClusterAdmin},
		{"ALTER ROLE app SET row_security = off", Block, OpClusterAdmin},
		{"ALTER ROLE app SET role = nobody", Block, OpClusterAdmin},
		{"ALTER ROLE app SET search_path FROM CURRENT", Block, OpClusterAdmin},
		{"ALTER DATABASE app SET default_transaction_read_only = off", Allow, 0},
		{"ALTER DATABASE app RESET default_transaction_read_only", Allow, 0},
		{"ALTER ROLE app SET statement_timeout = '30s'", Allow, 0},
		{"ALTER ROLE app SET statement_timeout = 0", Allow, 0},
		{"ALTER ROLE app SET work_mem = '64MB'", Allow, 0},
		{"ALTER ROLE app SET session_replication_role = origin", Allow, 0},
		// The whole server: ALTER SYSTEM runs outside any transaction.
		{"ALTER SYSTEM SET default_transaction_read_only = on", Block, OpClusterAdmin},
		{"ALTER SYSTEM SET search_path = 'x'", Block, OpClusterAdmin},
		{"ALTER SYSTEM SET listen_addresses = ''", Block, OpClusterAdmin},
		{"ALTER SYSTEM SET max_connections = 1", Block, OpClusterAdmin},
		{"ALTER SYSTEM SET fsync = off", Block, OpClusterAdmin},
		{"ALTER SYSTEM SET shared_preload_libraries = 'evil'", Block, OpClusterAdmin},
		{"ALTER SYSTEM RESET ALL", Block, OpClusterAdmin},
		{"ALTER SYSTEM SET work_mem = '64MB'", Allow, 0},
		{"ALTER SYSTEM SET max_connections = 200", Allow, 0},
		{"ALTER SYSTEM RESET default_transaction_read_only", Allow, 0},
		// This session: triggers and foreign keys off for what follows.
		{"SET session_replication_role = replica", Block, OpClusterAdmin},
		{"SET LOCAL session_replication_role TO 'local'", Block, OpClusterAdmin},
		{"SELECT set_config('session_replication_role', 'replica', false)", Block, OpClusterAdmin},
		{"CREATE FUNCTION f() RETURNS void LANGUAGE sql SET session_replication_role = replica AS 'SELECT 1'", Block, OpClusterAdmin},
		{"SET session_replication_role = origin", Allow, 0},
		{"RESET session_replication_role", Allow, 0},
		{"SET statement_timeout = 1", Allow, 0},
		{"SET default_transaction_read_only = on", Allow, 0},
		// Prepared transactions keep their locks after the session.
		{"BEGIN; UPDATE users SET note = 'x' WHERE id = 1; PREPARE TRANSACTION 'held'", Block, OpClusterAdmin},
		{"COMMIT PREPARED 'held'", Allow, 0},
		{"ROLLBACK PREPARED 'held'", Allow, 0},
		{"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'app'", Allow, 0},
	})
}

// TestClusterAdminRule: a rule allows cluster administration for the
// DBA; the default blocks it for everyone else, and nothing is refused
// when nothing is protected.
func TestClusterAdminRule(t *testing.T) {
	cfg := PolicyConfig{Protect: defaultProtect.Protect, Rules: []RuleConfig{
		{Name: "dba", Match: MatchConfig{Users: []string{"dba"}}, Operations: []string{"cluster_admin"}, Action: "allow"},
	}}
	eng := testEngine(t, cfg)
	if r := eng.Judge(knownSession("dba"), "ALTER ROLE app NOLOGIN"); r.Action != Allow || r.Decision().Rule != "dba" {
		t.Errorf("dba: %s by %q", r.Action, r.Decision().Rule)
	}
	r := eng.Judge(knownSession("app"), "ALTER ROLE app NOLOGIN")
	if r.Action != Block || r.Decision().Rule != RuleDefaultClusterAdmin {
		t.Errorf("app: %s by %q", r.Action, r.Decision().Rule)
	}
	if r := testEngine(t, PolicyConfig{}).Judge(knownSession("app"), "ALTER ROLE app NOLOGIN"); r.Action != Allow {
		t.Errorf("nothing protected: %s", r.Action)
	}
}

// TestValidUntilIsNotCached: whether VALID UNTIL locks the role out
// depends on the clock, so the decision is never reused.
func TestValidUntilIsNotCached(t *testing.T) {
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	p, err := Compile(defaultProtect)
	if err != nil {
		t.Fatal(err)
	}
	eng := NewEngine(p, EngineOptions{Clock: func() time.Time { return now }})
	const sql = "ALTER ROLE app VALID UNTIL '2025-07-01'"
	if r := eng.Judge(knownSession("app"), sql); r.Action != Allow {
		t.Fatalf("a month ahead: %s", r.Action)
	}
	now = now.AddDate(0, 2, 0)
	if r := eng.Judge(knownSession("app"), sql); r.Action != Block {
		t.Errorf("a month past: %s (a cached decision?)", r.Action)
	}
}
