// Command pgtmp runs a throwaway PostgreSQL cluster — the same one the tests
// get from internal/pgtest — until it is interrupted:
//
//	go run ./internal/cmd/pgtmp [-port N] [-dir D] [-keep] [-env-file FILE]
//
// Once the server takes connections it prints KEY=VALUE lines on stdout
// (PGTMP_DSN, PGTMP_UPSTREAM, PGTMP_PORT, ...; see envLines) and, with
// -env-file, writes the same lines, shell-quoted, to FILE. The file appears
// (atomically) only when the cluster is ready and is removed at exit, so a
// script can start pgtmp in the background, wait for the file and source it.
// SIGINT or SIGTERM stops the cluster and removes its directory (unless
// -keep). Run a built binary rather than `go run` in the background: the go
// command does not pass SIGTERM on to the program it runs.
package main
