// Package config owns pgmoat's configuration file: its keys, their
// defaults, strict decoding (an unknown key is an error) and validation.
// Every error names the file and the dotted key it concerns. `pgmoat serve`
// and `pgmoat check` load configuration through LoadFile, so the policy a CI
// job checks is the policy the proxy enforces.
package config
