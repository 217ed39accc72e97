// Package moattest runs the real pgmoat binary in front of the test
// harness's PostgreSQL, for end-to-end tests: a config file on disk,
// `pgmoat serve` as a child process, signals for reload and shutdown, and
// the admin API on its own port. The binary is built once per test process.
package moattest
