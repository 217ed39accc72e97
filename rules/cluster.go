package rules

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	pg_query "github.com/pganalyze/pg_query_go/v6"
)

// Cluster administration (OpClusterAdmin): statements that lock
// applications out of everything at once, with every row in place, or
// switch off what protects the tables for the statements that follow.
// While anything is protected they are blocked by default (rule
// default-cluster-admin); a rule allows them for the DBA:
//
//	ALTER DATABASE ... CONNECTION LIMIT n      n from 0 to 9 (-1 is no limit)
//	ALTER DATABASE ... ALLOW_CONNECTIONS false
//	REVOKE ... ON DATABASE                     CONNECT and TEMP
//	ALTER ROLE ... NOLOGIN, NOSUPERUSER, NOINHERIT, NOBYPASSRLS, NOREPLICATION,
//	    PASSWORD NULL, PASSWORD of another role than the session's own,
//	    CONNECTION LIMIT n (0 to 9), VALID UNTIL a time that is past or
//	    less than a day away ('infinity' and later times pass)
//	ALTER ROLE ... RENAME TO, DROP ROLE        its sessions can no longer log in
//	ALTER ROLE / DATABASE ... SET, ALTER SYSTEM SET of lockoutSettings, and
//	    their RESET ALL (which drops a role's search_path, for one)
//	SET / set_config session_replication_role to replica or local: triggers
//	    and foreign keys off for the session's next statements; the same
//	    as a function's SET clause
//	PREPARE TRANSACTION                        its locks on protected tables
//	    outlive the session (the proxy asks the server which it holds)
//
// IS_TEMPLATE, a change of one's own password, CREATE ROLE, GRANT and
// pg_terminate_backend pass: none keeps anyone out once the statement is
// over (terminated sessions reconnect).

// minConnectionLimit is the smallest connection limit that does not count
// as a lockout: below it a role or database starves any connection pool.
const minConnectionLimit = 10

// minTimeout is the shortest statement, lock or idle timeout given to
// every session that does not count as a lockout.
const minTimeout = time.Second

// validUntilGrace is how far in the future a VALID UNTIL must be not to
// count as locking the role out.
const validUntilGrace = 24 * time.Hour

// lockoutSettings judge a setting given to every new session of a role
// or database, or to the whole server (ALTER SYSTEM): the reason it locks
// applications out, or "". value is the setting's value as the server
// would read it; known is false when pgmoat cannot read it; reset says
// RESET or SET ... TO DEFAULT.
var lockoutSettings = map[string]func(value string, known, reset bool) string{
	"default_transaction_read_only": boolSetting(true, "makes every transaction read-only"),
	"transaction_read_only":         boolSetting(true, "makes every transaction read-only"),
	"search_path": func(string, bool, bool) string {
		return "changes which tables the sessions' unqualified names reach"
	},
	"session_replication_role": replicationRole,
	"role": func(v string, known, reset bool) string {
		if reset {
			return ""
		}
		return "makes every session run as role " + v
	},
	"row_security":                        boolSetting(false, "makes queries on tables with row-level security fail"),
	"exit_on_error":                       boolSetting(true, "ends each session at its first error"),
	"statement_timeout":                   timeoutSetting,
	"lock_timeout":                        timeoutSetting,
	"idle_in_transaction_session_timeout": timeoutSetting,
	"idle_session_timeout":                timeoutSetting,
	"transaction_timeout":                 timeoutSetting,
	// Server-wide settings that take effect at the next reload or restart.
	"listen_addresses":        restartSetting,
	"port":                    restartSetting,
	"unix_socket_directories": restartSetting,
	"hba_file":                restartSetting,
	"ident_file":              restartSetting,
	"max_connections": func(v string, known, reset bool) string {
		if n, err := strconv.Atoi(v); reset || known && err == nil && n >= minConnectionLimit {
			return ""
		}
		return "max_connections = " + v + " refuses connections after the next restart"
	},
	"shared_preload_libraries":  preloadSetting,
	"session_preload_libraries": preloadSetting,
	"local_preload_libraries":   preloadSetting,
	"fsync":                     boolSetting(false, "lets a crash corrupt every table"),
	"full_page_writes":          boolSetting(false, "lets a crash corrupt every table"),
	"zero_damaged_pages":        boolSetting(true, "zeroes damaged pages when read, losing their rows"),
	"allow_system_table_mods":   boolSetting(true, "allows changing the system catalogs' structure"),
}

// boolSetting judges a boolean setting that locks out when set to bad.
func boolSetting(bad bool, why string) func(string, bool, bool) string {
	return func(v string, known, reset bool) string {
		if reset {
			return ""
		}
		if b, ok := parseBool(v); known && ok && b != bad {
			return ""
		}
		return why
	}
}

func replicationRole(v string, known, reset bool) string {
	if reset || known && strings.EqualFold(v, "origin") {
		return ""
	}
	return "session_replication_role = " + v + " switches off triggers and foreign keys"
}

func timeoutSetting(v string, known, reset bool) string {
	if reset {
		return ""
	}
	if d, ok := parseDuration(v); known && ok && (d == 0 || d >= minTimeout) {
		return ""
	}
	return "a timeout of " + v + " cancels or ends the sessions' work"
}

func restartSetting(v string, known, reset bool) string {
	return "changes where or how clients connect, from the next restart"
}

func preloadSetting(v string, known, reset bool) string {
	if reset || known && strings.TrimSpace(v) == "" {
		return ""
	}
	return "loads libraries pgmoat cannot read into every session"
}

// parseDuration reads a time setting as PostgreSQL does for the
// timeouts: a number with an optional unit (us, ms, s, min, h, d),
// milliseconds by default.
func parseDuration(v string) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	i := 0
	for i < len(v) && (isDigit(v[i]) || v[i] == '.' || v[i] == '-' || v[i] == '+') {
		i++
	}
	n, err := strconv.ParseFloat(v[:i], 64)
	if err != nil {
		return 0, false
	}
	unit := map[string]time.Duration{"": time.Millisecond, "us": time.Microsecond, "ms": time.Millisecond, "s": time.Second,
		"min": time.Minute, "h": time.Hour, "d": 24 * time.Hour}
	u, ok := unit[strings.TrimSpace(v[i:])]
	if !ok {
		return 0, false
	}
	return time.Duration(n * float64(u)), true
}

// clusterSetting judges SET inside ALTER ROLE, ALTER DATABASE or ALTER
// SYSTEM (scope says which, for the sentence).
func (e *env) clusterSetting(s *pg_query.VariableSetStmt, scope string, obj Object, where string, out *[]Effect) {
	if s == nil {
		return
	}
	name := strings.ToLower(s.Name)
	if s.Kind == pg_query.VariableSetKind_VAR_RESET_ALL {
		e.add(out, OpClusterAdmin, obj, scope+" RESET ALL drops every setting it gave, search_path and connection settings included", where)
		return
	}
	judge, ok := lockoutSettings[name]
	if !ok {
		return
	}
	values, known := e.setValues(s)
	reset := false
	switch s.Kind {
	case pg_query.VariableSetKind_VAR_SET_DEFAULT, pg_query.VariableSetKind_VAR_RESET:
		reset = true
	case pg_query.VariableSetKind_VAR_SET_CURRENT:
		known = false
	}
	v := strings.Join(values, ", ")
	if why := judge(v, known, reset); why != "" {
		verb := " SET " + name
		if reset {
			verb = " RESET " + name
		}
		e.add(out, OpClusterAdmin, obj, scope+verb+" "+why, where)
	}
}

// sessionSetting judges a setting changed for the session itself (SET,
// set_config, a function's SET clause): only session_replication_role
// reaches past the session's own view, switching off the triggers and
// foreign keys of the tables its next statements write.
func (e *env) sessionSetting(name, value string, known, reset bool, what, where string, out *[]Effect) {
	if !strings.EqualFold(name, "session_replication_role") {
		return
	}
	e.literalSensitive = true
	if why := replicationRole(value, known, reset); why != "" {
		e.add(out, OpClusterAdmin, everything(), what+": "+why+" for the statements that follow", where)
	}
}

// setStmtCluster judges a session SET for sessionSetting.
func (e *env) setStmtCluster(s *pg_query.VariableSetStmt, where string, out *[]Effect) {
	if s == nil || !strings.EqualFold(s.Name, "session_replication_role") {
		return
	}
	values, known := e.setValues(s)
	reset := s.Kind == pg_query.VariableSetKind_VAR_SET_DEFAULT || s.Kind == pg_query.VariableSetKind_VAR_RESET
	if s.Kind == pg_query.VariableSetKind_VAR_SET_CURRENT {
		known = false
	}
	word := "SET "
	if s.IsLocal {
		word = "SET LOCAL "
	}
	e.sessionSetting(s.Name, strings.Join(values, ""), known, reset, word+"session_replication_role", where, out)
}

// functionSetClause judges the SET clauses of CREATE or ALTER FUNCTION:
// the body runs with them.
func (e *env) functionSetClause(opts []*pg_query.Node, what, where string, out *[]Effect) {
	for _, o := range opts {
		d := o.GetDefElem()
		if d == nil || d.Defname != "set" {
			continue
		}
		if s := d.Arg.GetVariableSetStmt(); s != nil {
			e.setStmtCluster(s, joinWhere(where, what), out)
		}
	}
}

// alterDatabaseCluster judges ALTER DATABASE ... WITH options.
func (e *env) alterDatabaseCluster(a *pg_query.AlterDatabaseStmt, where string, out *[]Effect) {
	db := Object{Kind: KindDatabase, Name: a.Dbname}
	what := "ALTER DATABASE " + QuoteIdent(a.Dbname)
	for _, o := range a.Options {
		d := o.GetDefElem()
		if d == nil {
			continue
		}
		e.literalSensitive = true
		switch d.Defname {
		case "connection_limit":
			if n, ok := defElemInt(d); !ok || n >= 0 && n < minConnectionLimit {
				e.add(out, OpClusterAdmin, db, what+" CONNECTION LIMIT "+defElemText(d)+" refuses the applications' connections", where)
			}
		case "allow_connections":
			if !defElemBool(d) {
				e.add(out, OpClusterAdmin, db, what+" ALLOW_CONNECTIONS false refuses every new connection", where)
			}
		}
	}
}

// alterRoleCluster judges ALTER ROLE (ALTER USER, ALTER GROUP).
func (e *env) alterRoleCluster(a *pg_query.AlterRoleStmt, where string, out *[]Effect) {
	role := roleList([]*pg_query.Node{{Node: &pg_query.Node_RoleSpec{RoleSpec: a.Role}}})
	what := "ALTER ROLE " + role
	for _, o := range a.Options {
		d := o.GetDefElem()
		if d == nil {
			continue
		}
		e.literalSensitive = true
		why := ""
		switch d.Defname {
		case "canlogin":
			if !defElemBool(d) {
				why = "NOLOGIN: its sessions can no longer log in"
			}
		case "superuser", "inherit", "bypassrls", "isreplication":
			if !defElemBool(d) {
				why = "NO" + strings.ToUpper(strings.TrimPrefix(d.Defname, "is")) + ": its sessions lose privileges they may rely on"
			}
		case "password":
			switch {
			case d.Arg == nil:
				why = "PASSWORD NULL: it can no longer log in with a password"
			case !e.ownRole(a.Role):
				// Rotating an application's password is a change
				// for whoever deploys the new one with it.
				why = "PASSWORD: the sessions that log in with its current password (an application's connection string) are refused from now on"
			}
		case "connectionlimit":
			if n, ok := defElemInt(d); !ok || n >= 0 && n < minConnectionLimit {
				why = "CONNECTION LIMIT " + defElemText(d) + ": its sessions are refused"
			}
		case "validUntil":
			why = e.validUntil(defElemText(d))
		case "rolemembers":
			if a.Action < 0 {
				var ms []*pg_query.Node
				if l := d.Arg.GetList(); l != nil {
					ms = l.Items
				}
				e.roleMembershipContract(role, roleList(ms), where, out)
			}
		}
		if why != "" {
			e.add(out, OpClusterAdmin, everything(), what+" "+why, where)
		}
	}
}

// ownRole reports whether r names the session's own role (psql's
// \password changes the password of the user it logged in as).
func (e *env) ownRole(r *pg_query.RoleSpec) bool {
	if r == nil {
		return false
	}
	switch r.Roletype {
	case pg_query.RoleSpecType_ROLESPEC_CURRENT_USER, pg_query.RoleSpecType_ROLESPEC_SESSION_USER, pg_query.RoleSpecType_ROLESPEC_CURRENT_ROLE:
		return true
	case pg_query.RoleSpecType_ROLESPEC_CSTRING:
		return e.user != "" && r.Rolename == e.user
	}
	return false
}

// validUntil says why VALID UNTIL t locks the role out ("" when it does
// not): a time that has passed, or comes within validUntilGrace, or that
// pgmoat cannot read. The decision depends on the clock, so it is never
// cached.
func (e *env) validUntil(t string) string {
	e.clockSensitive = true
	v := strings.ToLower(strings.TrimSpace(t))
	if v == "infinity" || v == "+infinity" {
		return ""
	}
	now := e.clock()
	at, ok := parseTimestamp(v, now)
	if !ok {
		return "VALID UNTIL '" + t + "': a time pgmoat cannot read may lock the role out"
	}
	switch {
	case at.Sub(now) >= validUntilGrace:
		return ""
	case at.After(now):
		return "VALID UNTIL '" + t + "': the role's password expires within a day"
	}
	return "VALID UNTIL '" + t + "': the role's password has expired"
}

// parseTimestamp reads the timestamp forms people write in VALID UNTIL.
func parseTimestamp(v string, now time.Time) (time.Time, bool) {
	switch v {
	case "-infinity", "epoch":
		return time.Unix(0, 0), true
	case "now", "today", "yesterday":
		return now, true
	case "tomorrow":
		return now.Add(24 * time.Hour), true
	}
	for _, layout := range []string{
		time.RFC3339Nano, "2006-01-02 15:04:05.999999999Z07:00", "2006-01-02 15:04:05.999999999Z07",
		"2006-01-02 15:04:05.999999999-07", "2006-01-02 15:04:05.999999999", "2006-01-02 15:04:05Z07:00",
		"2006-01-02 15:04:05-07", "2006-01-02 15:04:05", "2006-01-02 15:04", "2006-01-02T15:04:05", "2006-01-02",
		"Jan 2 2006", "January 2 2006", "Jan 2, 2006", "January 2, 2006", "2 Jan 2006", "2006/01/02",
	} {
		if t, err := time.Parse(layout, v); err == nil {
			return t, true
		}
		if t, err := time.Parse(layout, strings.ToUpper(v[:1])+v[1:]); err == nil {
			return t, true
		}
	}
	return time.Time{}, false
}

// defElemInt reads an integer option.
func defElemInt(d *pg_query.DefElem) (int64, bool) {
	switch a := d.Arg.GetNode().(type) {
	case *pg_query.Node_Integer:
		return int64(a.Integer.Ival), true
	case *pg_query.Node_String_:
		n, err := strconv.ParseInt(strings.TrimSpace(a.String_.Sval), 10, 64)
		return n, err == nil
	case *pg_query.Node_Float:
		n, err := strconv.ParseInt(a.Float.Fval, 10, 64)
		return n, err == nil
	}
	return 0, false
}

// defElemText renders an option's value for a sentence.
func defElemText(d *pg_query.DefElem) string {
	switch a := d.Arg.GetNode().(type) {
	case *pg_query.Node_Integer:
		return fmt.Sprint(a.Integer.Ival)
	case *pg_query.Node_String_:
		return a.String_.Sval
	case *pg_query.Node_Float:
		return a.Float.Fval
	case *pg_query.Node_Boolean:
		return fmt.Sprint(a.Boolean.Boolval)
	}
	return "?"
}

// dropRoleCluster judges DROP ROLE: the role's sessions can no longer
// log in (it succeeds for a login role that holds its privileges through
// membership).
func (e *env) dropRoleCluster(roles []*pg_query.Node, where string, out *[]Effect) {
	e.add(out, OpClusterAdmin, everything(), "DROP ROLE "+roleList(roles)+": its sessions can no longer log in", where)
}

// prepareTransactionCluster judges PREPARE TRANSACTION: the prepared
// transaction keeps its locks, on protected tables too, after the
// session ends and across restarts, until someone commits or rolls it
// back.
func (e *env) prepareTransactionCluster(t *pg_query.TransactionStmt, where string, out *[]Effect) {
	if t.Kind != pg_query.TransactionStmtKind_TRANS_STMT_PREPARE {
		return
	}
	// Only locks on protected tables lock the application out: the
	// proxy asks the server which locks the transaction holds before it
	// lets the statement through (pgmoat check, which cannot, reports it).
	e.possibly(func() {
		e.add(out, OpClusterAdmin, everything(), "PREPARE TRANSACTION "+quoteLiteral(t.Gid)+" keeps its locks after the session ends, until COMMIT PREPARED or ROLLBACK PREPARED", where)
	})
}

// quoteLiteral renders s as an SQL string constant for sentences.
func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
