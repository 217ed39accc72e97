package config

import (
	"fmt"
	"reflect"
	"strings"

	"go.yaml.in/yaml/v3"
)

// checkKeys walks a decoded YAML document against the Go type it will be
// decoded into and reports, by its dotted path (e.g.
// "policy.rules[1].acton"), the first key that type does not have or the
// first value that does not decode. yaml.v3's own errors name only the leaf
// key or just a line, which is not enough to find it in a long file.
func checkKeys(n *yaml.Node, t reflect.Type, path string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind == yaml.DocumentNode {
		for _, c := range n.Content {
			if err := checkKeys(c, t, path); err != nil {
				return err
			}
		}
		return nil
	}
	if n.Kind == yaml.AliasNode {
		return checkKeys(n.Alias, t, path)
	}
	_, custom := reflect.New(t).Interface().(yaml.Unmarshaler)
	if custom || (t.Kind() != reflect.Struct && t.Kind() != reflect.Slice) {
		// A leaf: decode it alone so that a bad value is reported with its key.
		if err := n.Decode(reflect.New(t).Interface()); err != nil {
			return &Error{Key: path, Err: leafError(err)}
		}
		return nil
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return nil // the decoder reports the type mismatch with its line
		}
		fields := yamlFields(t)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			key := join(path, k.Value)
			ft, ok := fields[k.Value]
			if !ok {
				return &Error{Key: key, Err: fmt.Errorf("line %d: unknown key", k.Line)}
			}
			if err := checkKeys(v, ft, key); err != nil {
				return err
			}
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return nil
		}
		for i, c := range n.Content {
			if err := checkKeys(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
	}
	return nil
}

// leafError strips yaml.v3's "yaml: unmarshal errors:" wrapping from the
// error of a single value.
func leafError(err error) error {
	msg := err.Error()
	msg = strings.TrimPrefix(msg, "yaml: unmarshal errors:\n  ")
	return fmt.Errorf("%s", msg)
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// yamlFields maps the YAML keys of struct type t to their field types.
func yamlFields(t reflect.Type) map[string]reflect.Type {
	m := make(map[string]reflect.Type, t.NumField())
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("yaml")
		name, _, _ := strings.Cut(tag, ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		m[name] = f.Type
	}
	return m
}

// isEmptyDocument reports whether doc holds no value: no document at all
// (an empty file, or only comments) or a lone null.
func isEmptyDocument(doc *yaml.Node) bool {
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return true
	}
	n := doc.Content[0]
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

// statedKeys returns the dotted keys, two levels deep ("holds",
// "policy.protect"), that doc gives a value other than null. A key written
// with nothing after it (`protect:`) is null, which is what a file cut
// short right after a key looks like: it does not count as stated. An
// empty list or mapping (`protect: []`, `holds: {}`) does.
func statedKeys(doc *yaml.Node) map[string]bool {
	keys := map[string]bool{}
	var walk func(n *yaml.Node, path string, depth int)
	walk = func(n *yaml.Node, path string, depth int) {
		for n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
			n = n.Content[0]
		}
		if n.Kind == yaml.AliasNode {
			n = n.Alias
		}
		if n.Kind != yaml.MappingNode {
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if v.Kind == yaml.AliasNode {
				v = v.Alias
			}
			if v.Kind == yaml.ScalarNode && v.Tag == "!!null" {
				continue
			}
			key := join(path, k.Value)
			keys[key] = true
			if depth < 2 {
				walk(v, key, depth+1)
			}
		}
	}
	walk(doc, "", 1)
	return keys
}
