// Package e2e holds pgmoat's end-to-end tests: the real binary (started by
// internal/moattest from a config file) in front of a real PostgreSQL
// (internal/pgtest), driven by real clients (pgx, psql, migration tools).
// They cover what only the whole product shows: enforcement on the wire,
// holds and approvals through the admin API, the audit file, metrics and
// configuration reload.
package e2e
