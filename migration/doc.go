// Package migration reads migration files as the tools that run them do,
// so that `pgmoat check` and `pgmoat approve --file` judge and pre-approve
// exactly the SQL each direction runs.
//
// A File is split into Sections, one per direction (up, down, verify),
// each holding the file's text with everything that direction does not
// run blanked out (replaced by spaces, newlines kept), so positions in a
// section are positions in the file. psql scripts (plain files, sqitch,
// pg_dump and pg_restore output) also lose their meta-commands
// (\connect, \restrict, \set, ...) and the data lines of COPY ... FROM
// stdin, which are not SQL.
//
// Formats, detected from the file's name and content (Detect) or named:
//
//   - goose: -- +goose Up / -- +goose Down annotations (StatementBegin,
//     StatementEnd and NO TRANSACTION change nothing pgmoat judges).
//   - golang-migrate: NAME.up.sql and NAME.down.sql.
//   - dbmate: -- migrate:up / -- migrate:down.
//   - Flyway: V<version>__ (up), U<version>__ (undo: down), R__
//     (repeatable: up).
//   - sqitch: files under deploy/ (up), revert/ (down), verify/ (verify).
//   - Liquibase formatted SQL: --changeset bodies (up) and their
//     --rollback lines or /* liquibase rollback */ blocks (down).
//   - plain: the whole file runs (a psql script).
package migration
