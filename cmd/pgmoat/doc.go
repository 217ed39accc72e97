// Command pgmoat is a PostgreSQL wire-protocol firewall: a proxy that
// parses every statement and blocks, or holds for human approval, those
// that would destroy protected tables. This package is the binary's
// composition root and command line:
//
//	pgmoat serve --config FILE [--listen ADDR] [--upstream URL]   run the proxy (serve.go)
//	pgmoat check --config FILE [...] FILE...                     judge migration files in CI (check.go)
//	pgmoat config check FILE [--against URL]                     validate a config, diff it with a running one (configcheck.go)
//	pgmoat holds list|show|approve|deny                          held statements (holds.go)
//	pgmoat approve --file F --ttl D --reason R                   pre-approve what a migration runs going up (holds.go)
//	pgmoat preapproval list|revoke                               pre-approvals (holds.go)
//	pgmoat audit verify [--from-genesis] FILE...                 check the audit log's hash chain, print its head (audit.go)
//	pgmoat version
//
// Exit status: 0 success; 1 findings (check: something would be blocked or
// held; config check: the file lowers protection; audit verify: the chain
// is broken) or an admin API error; 2 bad usage or an invalid
// configuration (config check: also one a reload would refuse); 3 config
// check could not ask the running instance.
//
// default.pgo is a CPU profile of pgmoat under the bench's pgbench matrix;
// `go build` of this package uses it for profile-guided optimisation
// (inlining and devirtualising the hot relay and enforcement calls).
// `make pgo` refreshes it.
package main
