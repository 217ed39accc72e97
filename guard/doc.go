// Package guard verifies what a statement really did to the protected
// tables, for statements whose harm static analysis cannot settle
// (rules.Verify): the proxy runs such a statement inside a transaction or
// savepoint of its own and, on the same server connection and before
// anything can commit, snapshots the protected relations before and after
// it. This package owns that snapshot and its comparison:
//
//   - Query builds the snapshot query for the policy's protect patterns:
//     every relation protection covers (the tables the patterns name, their
//     partitions and inheritance children), with its identity (OID, name,
//     schema, owner, storage, parent), its shape (columns, the composite and
//     enum types they use), the rows the transaction inserted, updated and
//     deleted in it (pg_stat_xact_*, which count rows changed by triggers,
//     cascades, functions and loops too), and a fingerprint of its contract
//     (constraints, unique indexes, defaults, identity and sequences,
//     privileges, row-level security, triggers, rules, replica identity,
//     publications, the functions those call); and the session settings the
//     analysis depends on (search_path, role, lexer settings).
//   - Parse reads its rows into a Snapshot.
//   - Compare says what changed between two snapshots as Violations, each
//     with the rules.Operation it amounts to and a measured sentence ("would
//     delete 1,204,331 of 1,204,331 rows of public.users"), under the row
//     limits (Limits, per protect pattern).
//
// The query is written to be read on a connection whose session the
// verified statement may have changed at will: every name is qualified with
// pg_catalog and every operator spelled OPERATOR(pg_catalog.x).
package guard
