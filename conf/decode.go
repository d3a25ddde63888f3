package conf

import (
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// decoder walks a YAML node tree against the Config struct by yaml tags,
// instead of letting yaml.v3 decode the whole document: yaml.v3 stops at
// the first unknown key and its type errors name no key, while check must
// list every problem with its key path and line.
type decoder struct {
	lines map[string]int // key path -> line of the key in the file
	errs  Errors
}

func (d *decoder) fail(key string, n *yaml.Node, format string, args ...any) {
	d.errs = append(d.errs, FieldError{Key: key, Line: n.Line, Msg: fmt.Sprintf(format, args...)})
}

// decodeDocument decodes a whole document into cfg (already holding the
// defaults), keeping every value that parses.
func (d *decoder) decodeDocument(doc *yaml.Node, cfg *Config) {
	if doc.Kind == 0 {
		return // empty input: the defaults
	}
	if doc.Kind == yaml.DocumentNode {
		if len(doc.Content) == 0 {
			return
		}
		doc = doc.Content[0]
	}
	if isNull(doc) {
		return
	}
	if doc.Kind != yaml.MappingNode {
		d.fail("(top level)", doc, "the configuration is %s; use a mapping of sections (agent, sources, records, buffer, output, metering, jobs, server, log)", kindName(doc))
		return
	}
	d.decodeStruct("", doc, reflect.ValueOf(cfg).Elem())
}

// decodeStruct decodes a mapping into the struct v field by field.
func (d *decoder) decodeStruct(path string, n *yaml.Node, v reflect.Value) {
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Tag == "!!merge" { // <<: *anchor
			for _, m := range mergeSources(val) {
				d.decodeStruct(path, m, v)
			}
			continue
		}
		key := join(path, k.Value)
		if seen[k.Value] {
			d.fail(key, k, "duplicate key; set it once")
			continue
		}
		seen[k.Value] = true
		f, ok := fieldOf(v, k.Value)
		if !ok {
			d.fail(key, k, "unknown key; use one of %s", strings.Join(yamlNames(v.Type()), ", "))
			continue
		}
		d.lines[key] = k.Line
		d.decodeValue(key, val, f)
	}
}

func mergeSources(n *yaml.Node) []*yaml.Node {
	n = resolve(n)
	if n.Kind == yaml.SequenceNode {
		var out []*yaml.Node
		for _, c := range n.Content {
			out = append(out, mergeSources(c)...)
		}
		return out
	}
	if n.Kind == yaml.MappingNode {
		return []*yaml.Node{n}
	}
	return nil
}

// decodeValue decodes one value into f, which keeps its previous value
// (the default) when the value does not parse.
func (d *decoder) decodeValue(key string, n *yaml.Node, f reflect.Value) {
	n = resolve(n)
	t := f.Type()
	if _, custom := f.Addr().Interface().(yaml.Unmarshaler); custom {
		d.decodeScalar(key, n, f)
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		if isNull(n) {
			return // an empty section keeps its defaults
		}
		if n.Kind != yaml.MappingNode {
			d.fail(key, n, "got %s; use a mapping of %s", kindName(n), strings.Join(yamlNames(t), ", "))
			return
		}
		d.decodeStruct(key, n, f)
	case reflect.Slice:
		if isNull(n) {
			f.Set(reflect.Zero(t))
			return
		}
		if n.Kind != yaml.SequenceNode {
			d.fail(key, n, "got %s; use a list (e.g. [a, b])", kindName(n))
			return
		}
		out := reflect.MakeSlice(t, len(n.Content), len(n.Content))
		for i, c := range n.Content {
			ik := fmt.Sprintf("%s[%d]", key, i)
			d.lines[ik] = c.Line
			d.decodeValue(ik, c, out.Index(i))
		}
		f.Set(out)
	case reflect.Map:
		if isNull(n) {
			f.Set(reflect.Zero(t))
			return
		}
		if n.Kind != yaml.MappingNode {
			d.fail(key, n, "got %s; use a mapping (e.g. {name: value})", kindName(n))
			return
		}
		out := reflect.MakeMapWithSize(t, len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := resolve(n.Content[i]), n.Content[i+1]
			mk := key + "." + k.Value
			if out.MapIndex(reflect.ValueOf(k.Value)).IsValid() {
				d.fail(mk, k, "duplicate key; set it once")
				continue
			}
			d.lines[mk] = k.Line
			ev := reflect.New(t.Elem()).Elem()
			d.decodeValue(mk, val, ev)
			out.SetMapIndex(reflect.ValueOf(k.Value), ev)
		}
		f.Set(out)
	case reflect.Pointer:
		if isNull(n) {
			f.Set(reflect.Zero(t))
			return
		}
		p := reflect.New(t.Elem())
		before := len(d.errs)
		d.decodeValue(key, n, p.Elem())
		if len(d.errs) == before {
			f.Set(p)
		}
	default:
		d.decodeScalar(key, n, f)
	}
}

// decodeScalar decodes a scalar with yaml.v3's own rules (so values mean
// what they meant before), rewording its errors to name what is accepted.
func (d *decoder) decodeScalar(key string, n *yaml.Node, f reflect.Value) {
	what := scalarName(f)
	if n.Kind != yaml.ScalarNode {
		d.fail(key, n, "got %s; use %s", kindName(n), what)
		return
	}
	p := reflect.New(f.Type())
	p.Elem().Set(f)
	if err := n.Decode(p.Interface()); err != nil {
		var te *yaml.TypeError
		if errors.As(err, &te) {
			d.fail(key, n, "%q is not %s", n.Value, what)
			return
		}
		d.fail(key, n, "%s", err.Error())
		return
	}
	f.Set(p.Elem())
}

// scalarName says what a scalar field accepts.
func scalarName(f reflect.Value) string {
	switch f.Type() {
	case sizeType:
		return "a size (e.g. 8MiB, 1GiB, 1048576)"
	case durationType:
		return "a duration (e.g. 60s, 5m, 1h)"
	}
	switch f.Kind() {
	case reflect.Bool:
		return "a boolean (true or false)"
	case reflect.Int, reflect.Int64:
		return "an integer"
	}
	return "a string"
}

func resolve(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	return strconv.Quote(n.Value)
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// fieldOf returns the field of struct v whose yaml name is name.
func fieldOf(v reflect.Value, name string) (reflect.Value, bool) {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		if t.Field(i).IsExported() && yamlName(t.Field(i)) == name {
			return v.Field(i), true
		}
	}
	return reflect.Value{}, false
}

// yamlNames lists the keys a struct accepts, in declaration order.
func yamlNames(t reflect.Type) []string {
	var names []string
	for i := 0; i < t.NumField(); i++ {
		if t.Field(i).IsExported() {
			names = append(names, yamlName(t.Field(i)))
		}
	}
	return names
}
