package rules

// PolicyConfig is the `policy` section of pgmoat's configuration file, as
// decoded from YAML. Compile validates it and turns it into a Policy.
type PolicyConfig struct {
	// Protect lists object patterns ("schema.table", with * globs).
	Protect []string `yaml:"protect"`
	// Rules is the ordered rule list; the first rule that matches wins.
	Rules []RuleConfig `yaml:"rules"`
	// Limits bound the rows one statement run under guard may delete or
	// update in a protected table, by protect pattern ("default" for the
	// rest).
	Limits map[string]LimitsConfig `yaml:"limits"`
}

// LimitsConfig is one entry of policy.limits. Unset fields take the
// default entry's value, or the built-in default.
type LimitsConfig struct {
	MaxRows     *int64   `yaml:"max_rows"`
	MaxFraction *float64 `yaml:"max_fraction"`
}

// RuleConfig is one entry of policy.rules.
type RuleConfig struct {
	Name       string      `yaml:"name"`
	Match      MatchConfig `yaml:"match"`
	Operations []string    `yaml:"operations"`
	Action     string      `yaml:"action"`
}

// MatchConfig selects the sessions a rule applies to. Empty lists match
// everything; within a list any entry may match; all non-empty lists must match.
type MatchConfig struct {
	Users        []string `yaml:"users"`
	Databases    []string `yaml:"databases"`
	Applications []string `yaml:"applications"`
	Clients      []string `yaml:"clients"`
}
