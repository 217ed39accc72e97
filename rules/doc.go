// Package rules owns statement analysis, the policy and the decision
// cache: given a session and SQL text, it says what each statement would
// destroy and what pgmoat does about it. It also owns SQL text as pgmoat
// writes it: identifiers and string constants quoted for generated SQL
// (QuoteIdent, DollarQuote) and statements shortened for display
// (Shorten).
//
// # Analysis
//
// Every statement is parsed with libpg_query (pg_query_go) and judged from
// its parse tree, never from its text. The analysis yields Effects: an
// Operation (drop, truncate, delete_all, update_all, alter_destructive,
// opaque, lexer_state, unparseable, contract, cluster_admin) on an Object, with names resolved as
// PostgreSQL resolves them: identifiers folded and unescaped by the
// parser itself (quoted names, U&"..." escapes), truncated to 63 bytes,
// unqualified names looked up through the session's search_path ($user
// expanded) and, when the Engine has one, the database's Catalog. An
// unqualified name counts as protected if it may resolve to a protected
// table in any schema of the search path, or in any schema at all when the
// search path is unknown.
//
// An operation reaches more than the relation it names: DML through a
// view or a rule reaches their bases, DELETE, UPDATE, TRUNCATE, DROP and
// recursing ALTERs of a parent reach its inheritance children and
// partitions, TRUNCATE ... CASCADE reaches tables with foreign keys to it,
// DELETE of every row reaches tables whose foreign keys to it are ON
// DELETE CASCADE (their rows go too) or SET NULL / SET DEFAULT (their rows
// are rewritten: update_all), UPDATE of every row reaches those whose keys
// act ON UPDATE (any column counts as the key), DML through a foreign
// table may reach anything. pgmoat follows these
// edges transitively, from the catalog snapshot, from what the
// database's sessions made through pgmoat since (Engine.Learn) and from
// what the session's own statements did (the session's overlay; see
// Session). Making a protected table a child or partition of an
// unprotected one (ALTER TABLE ... INHERIT, ATTACH PARTITION) is itself
// alter_destructive. Protection flows down the same edges: a partition or
// inheritance child of a protected table, at any depth, is protected
// itself (Object.Under says from which table). When the Engine has a catalog, Judge is strict about
// relations it does not know: DELETE, UPDATE or MERGE of every row,
// TRUNCATE or DROP ... CASCADE of a relation neither the snapshot nor the
// session knows counts as touching every protected table, since it may be
// a view, parent or partitioned table made after the snapshot by another
// session or outside pgmoat; DROP and ALTER of such a relation, or of an
// unqualified name only a schema off the search path holds, are Possible
// (run under guard). Without a catalog (pgmoat check, a failed load) names
// are judged by the search path alone.
//
// Destructive DML is found wherever it runs: top level, writable CTEs,
// CREATE TABLE AS, SELECT INTO, COPY (...) TO, EXPLAIN ANALYZE (every
// spelling; the last ANALYZE option wins), PREPARE and EXECUTE, MERGE,
// rules, function and procedure bodies (SQL, BEGIN ATOMIC and PL/pgSQL,
// through PostgreSQL's own PL/pgSQL compiler, including EXECUTE of a
// constant string) and DO blocks. A WHERE counts as absent when it does
// not depend on the target's rows (true, 1=1, NOT false, $1, x OR true,
// EXISTS over other tables, PL/pgSQL variables such as TG_OP) or keeps
// every row although it names a column (col = col + 0, col IS NOT NULL,
// ranges over a whole type, system columns, complements joined by OR,
// every row but a few of a unique key, subqueries and joins that give
// each row back to itself: see tautology.go and selfref.go). What pgmoat cannot see through (EXECUTE of a computed string,
// dblink, COPY ... PROGRAM, server files, catalog DML, other languages) is
// opaque, and so is anything that fires a function reaching outside the
// transaction (another connection, the server's files), however it is
// named or reached: through a function body, an aggregate, an operator,
// a cast, a domain check, a default, a generated column, a check, an
// index expression, a view, a policy, a rule or a trigger (sidedoor.go);
// making such a door (LANGUAGE c or internal, renaming or moving an
// escaping function, binding one to an object) is opaque too. A change
// that takes part of a protected table's contract away — privileges,
// row-level security, constraints and unique indexes, defaults, identity
// and the sequences feeding them, triggers and rules, replica identity,
// publications, owner, the functions it calls — is contract (contract.go,
// sequence.go); additive changes and tables the session made pass.
// Statements that lock applications out of everything at once (role and
// database lockouts, lockout settings, session_replication_role, PREPARE
// TRANSACTION) are cluster_admin (cluster.go). Settings that would make
// the server lex differently from
// pgmoat (standard_conforming_strings off, client encodings such as SJIS
// or GBK) are lexer_state. Both count as touching every protected table.
//
// # Policy
//
// Compile turns the YAML PolicyConfig into a Policy. protect lists
// schema.table patterns with * globs, written as PostgreSQL stores the
// names (folded: billing.*, public.users; public.Users means the table
// created as "Users"). rules are tried in order for each effect on a
// protected object; the first whose match selects the session (users,
// databases, applications: globs; clients: CIDRs) and whose operations
// cover the effect decides (allow, log, hold, block). Otherwise the
// defaults decide: block, by rule default-destructive for destructive
// operations (contract included), default-opaque for opaque, lexer_state
// and unparseable ones and default-cluster-admin for cluster_admin. Effects on unprotected objects are allowed, so a policy that
// protects nothing changes nothing.
//
// # Engine and sessions
//
// An Engine is shared by all sessions and safe for concurrent use;
// SetPolicy and SetCatalog swap what it uses atomically. Each client
// session has a Session that tracks search_path (SET, SET LOCAL, RESET,
// set_config, transactions and savepoints), the current role, prepared
// statements (SQL PREPARE and protocol-level named Parse) and its overlay
// on the catalog snapshot: the relations it created (temporary ones in
// pg_temp), dropped or renamed and the edges it added (views, children,
// partitions, foreign keys, rules). A relation the session created never
// shadows one further on the search path, since it may be gone by means
// pgmoat cannot see. COMMIT of a transaction the server reported failed
// is a ROLLBACK. A statement that may change search_path or the role
// where pgmoat cannot see (SET in a DO block or function body, code it
// cannot read, pg_reload_conf) reports ChangeStaleSettings: the path is
// unknown until the proxy reads the settings back (Session.ReadBack). The proxy also passes confirmed changes to
// Engine.Learn, which shares the non-temporary relations and edges with
// the database's other sessions (drops stay the session's: one may be
// rolled back). Engine.Judge
// returns a Result: a Verdict per statement (text, position, effects,
// action, rule, sentence, state changes, fingerprint) and the message's
// action, the strongest of its statements'. The proxy applies a verdict's
// Changes to the Session once the server has run the statement, and calls
// Session.Sync on every ReadyForQuery; a message sent before earlier ones
// are confirmed is judged with Session.Unsettled. CheckStartup and CheckParameter
// judge startup parameters and ParameterStatus values for lexer safety.
// Engine.JudgeScript analyses a migration file for `pgmoat check`.
//
// # API at a glance
//
//	Compile(PolicyConfig) (*Policy, error)        // errors are *PolicyError{Key, Err}
//	NewEngine(*Policy, EngineOptions) *Engine
//	(*Engine).SetPolicy(*Policy)                   // config reload
//	(*Engine).SetCatalog(database, *Catalog)       // from CatalogQuery rows or CatalogFromSQL
//	(*Engine).Learn(database, ...StateChange)      // confirmed relation changes, for every session
//	(*Engine).Judge(*Session, sql) *Result         // Query and Parse texts
//	(*Engine).JudgeBorrowed(ctx, *Session, sql) (*Result, kept) // a text in a reused buffer;
//	    (*Result).Keep(copy) before keeping the Result
//	(*Engine).JudgeOpaque(*Session, what) *Result  // FunctionCall
//	(*Engine).JudgeScript(*Session, sql) *Result   // pgmoat check
//	NewSession(Identity) *Session; (*Session).SetSearchPath, Apply, Sync,
//	    ReadBack, Unsettled, RegisterPrepared, ClosePrepared, Prepared, SearchPath
//	CheckStartup(params) (searchPath, ok, error); CheckParameter(name, value) error
//	Fingerprints(sql) ([]string, error); (*Verdict).Fingerprint()
//
// # Speed
//
// Judge answers from decisions made before, in two caches keyed by the
// session state that matters (policy version, catalog version, matching
// rules, search_path, role, transaction state, and a SHA-256 fingerprint
// of the session's overlay when it has one, so that sessions that made the
// same relations share decisions and sessions that made none share them
// with everyone). A conservative lexer replaces literals with placeholders,
// and the fast path reuses a decision made for the same statements with
// other literals, provided the analysis that made it never read a
// literal's value. A text without literals (or one the lexer leaves
// alone), or one the fast path does not know, is looked up as it is in the
// decision cache: a hit writes no shared memory and allocates nothing.
// Only then is the text parsed. JudgeBorrowed is Judge for a text in a
// buffer the caller reuses: it copies the text only for the full
// analysis. Before parsing, text is bounded in size and estimated
// nesting depth (Limits), because libpg_query recurses on the C stack and
// deep input would crash the process; text over the limits is
// unparseable.
//
// Analysis is linear in the length of a message. A long message is parsed
// in pieces of about 4 KiB cut at semicolons outside parentheses (found by
// the same lexer that bounds the depth; libpg_query costs several times
// more per statement when it parses 100k statements at once), and each
// statement's line and column are found by scanning on from the previous
// one. Between pieces and statements the analysis checks its budget
// (Limits.MaxStatements, MaxTime: past it the message is unparseable, with
// a *BudgetError naming the configuration key) and the context JudgeContext
// was given, which the proxy ends when the session does.
package rules
