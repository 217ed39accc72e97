// Package pgtest owns pgmoat's real-PostgreSQL test harness: it starts a
// throwaway cluster from the system's PostgreSQL binaries (or uses the server
// named by PGMOAT_TEST_DSN), with the users, pg_hba methods and server TLS
// that the proxy's tests need, and hands each test a fresh database.
//
// A test package opts in with
//
//	func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
//
// and then calls Get(t) for the cluster. The cluster itself (Start, Stop)
// has no dependency on a running test, so internal/cmd/pgtmp and the
// benchmarks start the very same cluster outside of tests.
//
// A started cluster:
//   - listens on 127.0.0.1 only, on a free port (or Options.Port), with its
//     Unix socket inside the data directory;
//   - runs with fsync off, UTC time zone and max_connections 300;
//   - has ssl=on with a certificate for 127.0.0.1, ::1 and localhost signed
//     by a CA made at start (CAFile); plain connections are allowed too;
//   - has the superuser (trust, and a password for clients that send one)
//     and four users, one per authentication method: UserTrust (trust),
//     UserClear (password), UserMD5 (md5, hash stored as md5) and UserSCRAM
//     (scram-sha-256). Any other role authenticates with md5, which lets a
//     SCRAM-stored password use SCRAM.
//
// When run as root, initdb and postgres run as the postgres OS user (which
// is created if missing). The postmaster gets SIGQUIT if the process that
// started it dies, and directories left by dead test binaries are removed on
// the next start, so a crashed test leaves neither a server nor a directory
// behind for long.
package pgtest
