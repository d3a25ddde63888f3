package conf

import (
	"encoding"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// PropertyConfigFile is the Fluent Bit property naming a YAML file loaded
// before the other properties are applied.
const PropertyConfigFile = "config_file"

// Property is one flattened setting, as Fluent Bit users write it.
type Property struct {
	Name    string // e.g. output_url
	Key     string // YAML path, e.g. output.url
	Kind    string // string, bool, int, size, duration, list, map
	Default string
}

var (
	sizeType     = reflect.TypeOf(Size(0))
	durationType = reflect.TypeOf(Duration(0))
)

// Properties lists every flattened setting: each field of every section
// except sources (the plugin's input is Fluent Bit itself) and jobs.
func Properties() []Property {
	def := reflect.ValueOf(Default())
	var props []Property
	t := def.Type()
	for i := 0; i < t.NumField(); i++ {
		sec := t.Field(i)
		if sec.Type.Kind() != reflect.Struct {
			continue
		}
		secName := yamlName(sec)
		if secName == "jobs" {
			continue // the Jobs API is served by the agent alone
		}
		for j := 0; j < sec.Type.NumField(); j++ {
			f := sec.Type.Field(j)
			name := yamlName(f)
			props = append(props, Property{
				Name:    secName + "_" + name,
				Key:     secName + "." + name,
				Kind:    kindOf(f.Type),
				Default: render(def.Field(i).Field(j)),
			})
		}
	}
	return props
}

func yamlName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	return name
}

func kindOf(t reflect.Type) string {
	switch {
	case t == sizeType:
		return "size"
	case t == durationType:
		return "duration"
	}
	switch t.Kind() {
	case reflect.Bool:
		return "bool"
	case reflect.Int, reflect.Int64:
		return "int"
	case reflect.Slice:
		return "list"
	case reflect.Map:
		return "map"
	}
	return "string"
}

func render(v reflect.Value) string {
	switch x := v.Interface().(type) {
	case Size:
		return x.String()
	case Duration:
		return x.String()
	case []string:
		return strings.Join(x, ",")
	case map[string]string:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = k + "=" + x[k]
		}
		return strings.Join(parts, ",")
	}
	return fmt.Sprint(v.Interface())
}

// FromProperties builds a Config the way the Fluent Bit plugin does:
// defaults, then the YAML named by config_file (if any), then every
// property that get returns non-empty, then derived defaults. Like Parse,
// it reports every key problem at once, as Errors (a property's names the
// property), with the Config holding every value that did parse, for
// engine.Validate; an unreadable config_file is an error of its own.
func FromProperties(get func(name string) string) (Config, error) {
	cfg := Default()
	var errs Errors
	if path := strings.TrimSpace(get(PropertyConfigFile)); path != "" {
		loaded, err := Load(path)
		if !errors.As(err, &errs) && err != nil {
			return Config{}, fmt.Errorf("%s: %w", PropertyConfigFile, err)
		}
		cfg = loaded
	}
	root := reflect.ValueOf(&cfg).Elem()
	for _, p := range Properties() {
		raw := strings.TrimSpace(get(p.Name))
		if raw == "" {
			continue
		}
		// The property overrides the file: errors about the key are no
		// longer about the file's line.
		for k := range cfg.lines {
			if within(k, p.Key) {
				delete(cfg.lines, k)
			}
		}
		errs = slices.DeleteFunc(errs, func(fe FieldError) bool { return within(fe.Key, p.Key) })
		expanded, err := ExpandEnv(raw)
		if err != nil {
			errs = append(errs, FieldError{Key: p.Key, Property: p.Name, Msg: err.Error()})
			continue
		}
		sec, key, _ := strings.Cut(p.Key, ".")
		field := fieldByYAML(fieldByYAML(root, sec), key)
		if err := setFromString(field, expanded); err != nil {
			errs = append(errs, FieldError{Key: p.Key, Property: p.Name, Msg: err.Error()})
		}
	}
	cfg.fill()
	if len(errs) > 0 {
		return cfg, errs
	}
	return cfg, nil
}

func fieldByYAML(v reflect.Value, name string) reflect.Value {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		if yamlName(t.Field(i)) == name {
			return v.Field(i)
		}
	}
	panic("conf: no field " + name)
}

// setFromString parses one property value into a field: lists are
// comma-separated, maps are k=v pairs separated by commas.
func setFromString(f reflect.Value, s string) error {
	if u, ok := f.Addr().Interface().(encoding.TextUnmarshaler); ok && f.Kind() == reflect.String {
		return u.UnmarshalText([]byte(s)) // an enum: parsed once, here
	}
	switch f.Type() {
	case sizeType:
		v, err := ParseSize(s)
		if err != nil {
			return err
		}
		f.SetInt(int64(v))
		return nil
	case durationType:
		v, err := ParseDuration(s)
		if err != nil {
			return err
		}
		f.SetInt(int64(v))
		return nil
	}
	switch f.Kind() {
	case reflect.String:
		f.SetString(s)
	case reflect.Bool:
		v, err := parseBool(s)
		if err != nil {
			return err
		}
		f.SetBool(v)
	case reflect.Int, reflect.Int64:
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return fmt.Errorf("%q is not an integer", s)
		}
		f.SetInt(v)
	case reflect.Slice:
		var items []string
		for _, it := range strings.Split(s, ",") {
			if it = strings.TrimSpace(it); it != "" {
				items = append(items, it)
			}
		}
		f.Set(reflect.ValueOf(items))
	case reflect.Map:
		m := map[string]string{}
		for _, pair := range strings.Split(s, ",") {
			pair = strings.TrimSpace(pair)
			if pair == "" {
				continue
			}
			k, v, ok := strings.Cut(pair, "=")
			k, v = strings.TrimSpace(k), strings.TrimSpace(v)
			if !ok || k == "" {
				return fmt.Errorf("%q is not key=value (write k1=v1,k2=v2)", pair)
			}
			m[k] = v
		}
		f.Set(reflect.ValueOf(m))
	default:
		return fmt.Errorf("unsupported field type %s", f.Type())
	}
	return nil
}

// parseBool accepts what Fluent Bit users write: true/false, on/off, yes/no.
func parseBool(s string) (bool, error) {
	switch strings.ToLower(s) {
	case "true", "on", "yes", "1":
		return true, nil
	case "false", "off", "no", "0":
		return false, nil
	}
	return false, fmt.Errorf("%q is not a boolean (true/false, on/off, yes/no)", s)
}
