// Package clients owns pgmoat's non-Go test clients and the helpers that
// run them: node-postgres (node/run.js, a fixed scenario whose JSON output
// is compared directly against PostgreSQL and through pgmoat) and the real
// psql binary. The node client's dependencies are pinned by
// node/package-lock.json and installed with `npm ci` on first use.
package clients
