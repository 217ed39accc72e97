package migration

import "strings"

// isLiquibaseHeader reports whether t is the first line of a Liquibase
// formatted SQL file: --liquibase formatted sql.
func isLiquibaseHeader(t string) bool {
	rest, ok := strings.CutPrefix(t, "--")
	return ok && strings.EqualFold(strings.Join(strings.Fields(rest), " "), "liquibase formatted sql")
}

// liquibaseDirective returns the directive of a Liquibase comment line
// (--changeset, --rollback, ...) and what follows it.
func liquibaseDirective(t string) (name, rest string, ok bool) {
	body, ok := strings.CutPrefix(t, "--")
	if !ok {
		return "", "", false
	}
	body = strings.TrimLeft(body, " \t")
	for _, d := range []string{"changeset", "rollback"} {
		if len(body) >= len(d) && strings.EqualFold(body[:len(d)], d) &&
			(len(body) == len(d) || body[len(d)] == ' ' || body[len(d)] == '\t') {
			return d, body[len(d):], true
		}
	}
	return "", "", false
}

// readLiquibase splits a Liquibase formatted SQL file: the bodies of its
// changesets run going up; their --rollback lines (the SQL after the
// directive) and /* liquibase rollback ... */ blocks run going down.
func readLiquibase(lines []string) *File {
	var up, down strings.Builder
	var hasUp, hasDown, inChange, inBlock bool
	for _, l := range lines {
		t := strings.TrimSpace(l)
		switch {
		case inBlock:
			if i := strings.Index(l, "*/"); i >= 0 {
				inBlock = false
				down.WriteString(l[:i] + blank(l[i:]))
			} else {
				down.WriteString(l)
				hasDown = hasDown || t != ""
			}
			up.WriteString(blank(l))
			continue
		case inChange && strings.HasPrefix(strings.ToLower(strings.Join(strings.Fields(t), " ")), "/* liquibase rollback"):
			inBlock = true
			i := strings.Index(strings.ToLower(l), "rollback") + len("rollback")
			rest := l[i:]
			if j := strings.Index(rest, "*/"); j >= 0 {
				inBlock = false
				down.WriteString(blank(l[:i]) + rest[:j] + blank(rest[j:]))
				hasDown = hasDown || strings.TrimSpace(rest[:j]) != ""
			} else {
				down.WriteString(blank(l[:i]) + rest)
				hasDown = hasDown || strings.TrimSpace(rest) != ""
			}
			up.WriteString(blank(l))
			continue
		}
		if name, rest, ok := liquibaseDirective(t); ok {
			switch name {
			case "changeset":
				inChange = true
				up.WriteString(blank(l))
				down.WriteString(blank(l))
			case "rollback":
				up.WriteString(blank(l))
				if inChange {
					i := len(l) - len(strings.TrimLeft(l, " \t")) + (len(t) - len(rest))
					down.WriteString(blank(l[:i]) + l[i:])
					hasDown = hasDown || strings.TrimSpace(rest) != ""
				} else {
					down.WriteString(blank(l))
				}
			}
			continue
		}
		down.WriteString(blank(l))
		if inChange {
			up.WriteString(l)
			hasUp = hasUp || t != "" && !strings.HasPrefix(t, "--")
		} else {
			up.WriteString(blank(l))
		}
	}
	f := &File{Format: Liquibase}
	if hasUp {
		f.Sections = append(f.Sections, Section{Direction: Up, SQL: up.String()})
	}
	if hasDown {
		f.Sections = append(f.Sections, Section{Direction: Down, SQL: down.String()})
	}
	return f
}
