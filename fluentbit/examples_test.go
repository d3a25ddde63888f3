package fluentbit

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/metership/metership/conf"
)

// fluentBitOutputKeys are the generic [OUTPUT] properties Fluent Bit itself
// handles: the plugin never sees them.
var fluentBitOutputKeys = map[string]bool{
	"name": true, "match": true, "match_regex": true, "alias": true, "workers": true,
	"retry_limit": true, "log_level": true, "storage.total_limit_size": true,
}

// outputSection is the properties of one `metership` output found in an
// example config.
type outputSection struct {
	where string
	props map[string]string
}

// TestExampleConfigsValidate loads every metership output of the example
// Fluent Bit configs under docker/fluent-bit exactly as the plugin would,
// and rejects property names the plugin does not know: Fluent Bit cannot
// tell the plugin about a misspelt property, so the examples must not have
// one.
func TestExampleConfigsValidate(t *testing.T) {
	var sections []outputSection
	sections = append(sections, classicOutputs(t, "../docker/fluent-bit/fluent-bit.conf")...)
	sections = append(sections, yamlOutputs(t, "../docker/fluent-bit/fluent-bit.yaml", readFile(t, "../docker/fluent-bit/fluent-bit.yaml"))...)
	for _, text := range configMapKeys(t, "../docker/fluent-bit/k8s-sidecar.yaml", "fluent-bit.yaml") {
		sections = append(sections, yamlOutputs(t, "../docker/fluent-bit/k8s-sidecar.yaml", text)...)
	}
	if len(sections) != 3 {
		t.Fatalf("found %d metership outputs in the examples, want 3", len(sections))
	}
	known := map[string]bool{conf.PropertyConfigFile: true}
	for _, p := range conf.Properties() {
		known[p.Name] = true
	}
	for _, s := range sections {
		for k := range s.props {
			if !known[k] && !fluentBitOutputKeys[k] {
				t.Errorf("%s: unknown property %q", s.where, k)
			}
		}
		if _, problems, err := LoadConfig(props(s.props)); err != nil {
			t.Errorf("%s: %v %+v", s.where, err, problems)
		}
		if s.props["output_url"] == "" || s.props["buffer_dir"] == "" {
			t.Errorf("%s: set output_url and buffer_dir explicitly", s.where)
		}
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// classicOutputs parses [OUTPUT] sections of a classic Fluent Bit config
// whose Name is metership (keys lowercased, as Fluent Bit compares them).
func classicOutputs(t *testing.T, path string) []outputSection {
	t.Helper()
	var out []outputSection
	var cur map[string]string
	flush := func() {
		if cur != nil && strings.EqualFold(cur["name"], "metership") {
			out = append(out, outputSection{where: path, props: cur})
		}
		cur = nil
	}
	sc := bufio.NewScanner(strings.NewReader(readFile(t, path)))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "["):
			flush()
			if strings.EqualFold(line, "[OUTPUT]") {
				cur = map[string]string{}
			}
		case cur != nil:
			k, v, _ := strings.Cut(line, " ")
			cur[strings.ToLower(k)] = strings.TrimSpace(v)
		}
	}
	flush()
	return out
}

// yamlOutputs returns the metership entries of pipeline.outputs of a
// Fluent Bit YAML config.
func yamlOutputs(t *testing.T, where, text string) []outputSection {
	t.Helper()
	var doc struct {
		Pipeline struct {
			Outputs []map[string]any `yaml:"outputs"`
		} `yaml:"pipeline"`
	}
	if err := yaml.Unmarshal([]byte(text), &doc); err != nil {
		t.Fatalf("%s: %v", where, err)
	}
	var out []outputSection
	for _, o := range doc.Pipeline.Outputs {
		m := map[string]string{}
		for k, v := range o {
			m[strings.ToLower(k)] = fmt.Sprint(v)
		}
		if m["name"] == "metership" {
			out = append(out, outputSection{where: where, props: m})
		}
	}
	return out
}

// configMapKeys returns data[key] of every ConfigMap in a manifest file.
func configMapKeys(t *testing.T, path, key string) []string {
	t.Helper()
	dec := yaml.NewDecoder(bytes.NewReader([]byte(readFile(t, path))))
	var texts []string
	for {
		var obj struct {
			Kind string            `yaml:"kind"`
			Data map[string]string `yaml:"data"`
		}
		err := dec.Decode(&obj)
		if errors.Is(err, io.EOF) {
			return texts
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if obj.Kind == "ConfigMap" && obj.Data[key] != "" {
			texts = append(texts, obj.Data[key])
		}
	}
}
