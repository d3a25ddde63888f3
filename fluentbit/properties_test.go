package fluentbit

import (
	"flag"
	"os"
	"strings"
	"testing"

	"github.com/metership/metership/conf"
)

var update = flag.Bool("update", false, "rewrite the property table in the README")

const (
	tableBegin = "<!-- properties:begin"
	tableEnd   = "<!-- properties:end -->"
)

func TestEveryPropertyDocumented(t *testing.T) {
	for _, p := range conf.Properties() {
		if propertyDoc(p.Name) == "" {
			t.Errorf("property %s has no description in propertyDoc", p.Name)
		}
	}
	if propertyDoc(conf.PropertyConfigFile) == "" {
		t.Error("config_file has no description")
	}
}

// TestPropertyTableUpToDate keeps the README section's table equal to
// PropertyTable (run with -update to rewrite it).
func TestPropertyTableUpToDate(t *testing.T) {
	const path = "../README.md"
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	i := strings.Index(doc, tableBegin)
	j := strings.Index(doc, tableEnd)
	if i < 0 || j < i {
		t.Fatalf("%s has no %s ... %s markers", path, tableBegin, tableEnd)
	}
	i += strings.Index(doc[i:], "\n") + 1
	want := PropertyTable()
	if doc[i:j] == want {
		return
	}
	if !*update {
		t.Fatalf("the property table in %s is out of date; run go test ./fluentbit -run TestPropertyTableUpToDate -update", path)
	}
	if err := os.WriteFile(path, []byte(doc[:i]+want+doc[j:]), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestPropertyTableRows(t *testing.T) {
	table := PropertyTable()
	for _, want := range []string{
		"| `output_url` | `file://./out/ingest/amberdata` | ",
		"| `buffer_dir` | `./data` | ",
		"| `config_file` |   | ",
		"| `records_fields` |   | ",
	} {
		if !strings.Contains(table, want) {
			t.Errorf("table has no row starting %q", want)
		}
	}
	if rows := strings.Count(table, "\n") - 2; rows != len(conf.Properties())+1 {
		t.Errorf("%d rows, want %d", rows, len(conf.Properties())+1)
	}
}
