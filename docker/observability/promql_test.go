// Package observability checks docker/observability against Prometheus
// itself: the Grafana dashboard's and the alert rules' PromQL parse with
// Prometheus' parser, the rule files load with its rule-file loader, the
// PrometheusRule decodes strictly with the Prometheus Operator's type,
// and every metric and label they name is exposed by a running agent and
// jobs server. It is a module of its own, so that the agent's module does
// not depend on Prometheus and the Operator.
package observability

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
)

const (
	alertsFile    = "alerts.yaml"
	ruleCRDFile   = "prometheusrule.yaml"
	dashboardFile = "grafana-dashboard.json"
	readmeFile    = "../../README.md"
)

// promParser is Prometheus' PromQL parser with its default options, as
// the server and promtool use it.
var promParser = parser.NewParser(parser.Options{})

// query is one PromQL expression and where it comes from.
type query struct {
	where string // "alerts.yaml: MetershipUploadsFailing", "dashboard: panel ..."
	expr  string // as Prometheus runs it (dashboard variables substituted)
	// legend holds the dashboard target's legendFormat ("" for rules).
	legend string
}

// loadRules loads alerts.yaml with Prometheus' rule-file loader.
func loadRules(t *testing.T) *rulefmt.RuleGroups {
	t.Helper()
	rgs, errs := rulefmt.ParseFile(alertsFile, false, model.UTF8Validation, promParser, nil)
	for _, err := range errs {
		t.Error(err)
	}
	if rgs == nil || len(errs) > 0 {
		t.FailNow()
	}
	return rgs
}

func ruleQueries(t *testing.T) []query {
	t.Helper()
	var qs []query
	for _, g := range loadRules(t).Groups {
		for _, r := range g.Rules {
			qs = append(qs, query{where: fmt.Sprintf("%s: %s %s", alertsFile, g.Name, r.Alert+r.Record), expr: r.Expr})
		}
	}
	return qs
}

// dashboard is the part of the Grafana dashboard JSON the tests read.
type dashboard struct {
	Title         string  `json:"title"`
	UID           string  `json:"uid"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []variable `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID         int         `json:"id"`
	Type       string      `json:"type"`
	Title      string      `json:"title"`
	Datasource *datasource `json:"datasource"`
	GridPos    struct {
		H, W, X, Y int
	} `json:"gridPos"`
	Targets []struct {
		RefID        string      `json:"refId"`
		Expr         string      `json:"expr"`
		LegendFormat string      `json:"legendFormat"`
		Datasource   *datasource `json:"datasource"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // a collapsed row's panels
}

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type variable struct {
	Name       string          `json:"name"`
	Type       string          `json:"type"`
	Query      json.RawMessage `json:"query"`
	Definition string          `json:"definition"`
	Datasource *datasource     `json:"datasource"`
	IncludeAll bool            `json:"includeAll"`
	Multi      bool            `json:"multi"`
	AllValue   string          `json:"allValue"`
}

func loadDashboard(t *testing.T) dashboard {
	t.Helper()
	raw, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	return d
}

// allPanels flattens rows.
func (d dashboard) allPanels() []panel {
	var out []panel
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			out = append(out, p)
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return out
}

// grafanaVars are what Grafana puts for the variables the queries use:
// the dashboard's own ($instance, multi-valued: a regex) and Grafana's
// built-in intervals.
var grafanaVars = map[string]string{
	"instance":        ".+",
	"__rate_interval": "5m",
	"__interval":      "1m",
	"__range":         "1h",
	"__range_s":       "3600",
	"__interval_ms":   "60000",
}

var varRef = regexp.MustCompile(`\$\{?(\w+)\}?`)

// substitute replaces Grafana variables as Grafana does before sending a
// query to Prometheus; an unknown variable is an error.
func substitute(expr string) (string, error) {
	var unknown []string
	out := varRef.ReplaceAllStringFunc(expr, func(m string) string {
		name := varRef.FindStringSubmatch(m)[1]
		v, ok := grafanaVars[name]
		if !ok {
			unknown = append(unknown, m)
		}
		return v
	})
	if len(unknown) > 0 {
		return "", fmt.Errorf("unknown variable(s) %v", unknown)
	}
	return out, nil
}

// dashboardQueries returns every panel target's expression, variables
// substituted, and the metric selectors of the label_values() variables.
func dashboardQueries(t *testing.T) []query {
	t.Helper()
	d := loadDashboard(t)
	var qs []query
	for _, p := range d.allPanels() {
		for _, tg := range p.Targets {
			expr, err := substitute(tg.Expr)
			if err != nil {
				t.Errorf("%s: panel %q target %s: %v", dashboardFile, p.Title, tg.RefID, err)
				continue
			}
			qs = append(qs, query{where: fmt.Sprintf("%s: panel %q target %s", dashboardFile, p.Title, tg.RefID), expr: expr, legend: tg.LegendFormat})
		}
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		sel, label, ok := labelValues(v.Definition)
		if !ok {
			t.Errorf("%s: variable %s: query %q is not label_values(<selector>, <label>)", dashboardFile, v.Name, v.Definition)
			continue
		}
		// The selector must be exposed, with the label (a target label
		// here: instance).
		qs = append(qs, query{where: fmt.Sprintf("%s: variable %s", dashboardFile, v.Name), expr: fmt.Sprintf("count by (%s) (%s)", label, sel)})
	}
	return qs
}

var labelValuesRe = regexp.MustCompile(`^label_values\(\s*(.+?)\s*,\s*(\w+)\s*\)$`)

func labelValues(def string) (selector, label string, ok bool) {
	m := labelValuesRe.FindStringSubmatch(strings.TrimSpace(def))
	if m == nil {
		return "", "", false
	}
	return m[1], m[2], true
}

func allQueries(t *testing.T) []query {
	return append(ruleQueries(t), dashboardQueries(t)...)
}

// targetLabels are added by Prometheus (and the Prometheus Operator) when
// it scrapes, not by metership: queries may use them freely.
var targetLabels = map[string]bool{"instance": true, "job": true, "pod": true, "namespace": true, "service": true, "container": true, "endpoint": true}

// exposition is what /metrics served: sample name (histogram buckets as
// name_bucket, ...) -> label name -> values seen.
type exposition map[string]map[string]map[string]bool

func (e exposition) add(name string, ls map[string]string) {
	if e[name] == nil {
		e[name] = map[string]map[string]bool{}
	}
	for k, v := range ls {
		if e[name][k] == nil {
			e[name][k] = map[string]bool{}
		}
		e[name][k][v] = true
	}
}

// selectorName is a vector selector's metric name.
func selectorName(vs *parser.VectorSelector) string {
	if vs.Name != "" {
		return vs.Name
	}
	for _, m := range vs.LabelMatchers {
		if m.Name == model.MetricNameLabel && m.Type == labels.MatchEqual {
			return m.Value
		}
	}
	return ""
}

// check returns what expr names that e does not expose: metrics, label
// names in matchers and in by/without clauses, and label values an
// equality or regex matcher needs. legend's {{label}} references must be
// labels of the metrics the query reads.
func (e exposition) check(expr parser.Expr, legend string) []string {
	var problems []string
	namesUnder := func(n parser.Node) []string {
		var names []string
		parser.Inspect(n, func(n parser.Node, _ []parser.Node) error {
			if vs, ok := n.(*parser.VectorSelector); ok {
				names = append(names, selectorName(vs))
			}
			return nil
		})
		return names
	}
	hasLabel := func(names []string, l string) bool {
		for _, n := range names {
			if _, ok := e[n][l]; ok {
				return true
			}
		}
		return targetLabels[l]
	}
	parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
		switch n := n.(type) {
		case *parser.VectorSelector:
			name := selectorName(n)
			if name == "" {
				problems = append(problems, fmt.Sprintf("selector %s has no metric name", n))
				return nil
			}
			series, ok := e[name]
			if !ok {
				problems = append(problems, fmt.Sprintf("metric %s is not exposed", name))
				return nil
			}
			for _, m := range n.LabelMatchers {
				if m.Name == model.MetricNameLabel || targetLabels[m.Name] {
					continue
				}
				values, ok := series[m.Name]
				if !ok {
					problems = append(problems, fmt.Sprintf("%s has no label %q", name, m.Name))
					continue
				}
				if m.Type == labels.MatchEqual || m.Type == labels.MatchRegexp {
					if !slices.ContainsFunc(slices.Collect(mapKeys(values)), m.Matches) {
						problems = append(problems, fmt.Sprintf("%s: no series with %s", name, m))
					}
				}
			}
		case *parser.AggregateExpr:
			names := namesUnder(n.Expr)
			for _, l := range n.Grouping {
				if !hasLabel(names, l) {
					clause := "by"
					if n.Without {
						clause = "without"
					}
					problems = append(problems, fmt.Sprintf("%s %s (%s) names label %q, which none of %v has", n.Op, clause, strings.Join(n.Grouping, ", "), l, names))
				}
			}
		case *parser.BinaryExpr:
			if n.VectorMatching != nil {
				names := namesUnder(n)
				for _, l := range append(slices.Clone(n.VectorMatching.MatchingLabels), n.VectorMatching.Include...) {
					if !hasLabel(names, l) {
						problems = append(problems, fmt.Sprintf("vector matching names label %q, which none of %v has", l, names))
					}
				}
			}
		}
		return nil
	})
	for _, m := range legendRef.FindAllStringSubmatch(legend, -1) {
		if !hasLabel(namesUnder(expr), m[1]) {
			problems = append(problems, fmt.Sprintf("legend %q names label %q, which the query's metrics do not have", legend, m[1]))
		}
	}
	return problems
}

var legendRef = regexp.MustCompile(`\{\{\s*(\w+)\s*\}\}`)

func mapKeys[K comparable, V any](m map[K]V) func(func(K) bool) {
	return func(yield func(K) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// metricNames returns the metric names expr reads, sorted.
func metricNames(expr parser.Expr) []string {
	seen := map[string]bool{}
	parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok {
			seen[selectorName(vs)] = true
		}
		return nil
	})
	var out []string
	for n := range seen {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// TestEveryQueryParses parses every rule and dashboard expression with
// Prometheus' parser and checks that each reads only metership_ metrics
// (and that there are queries at all).
func TestEveryQueryParses(t *testing.T) {
	qs := allQueries(t)
	if len(qs) < 30 {
		t.Fatalf("only %d queries found in %s and %s", len(qs), alertsFile, dashboardFile)
	}
	for _, q := range qs {
		expr, err := promParser.ParseExpr(q.expr)
		if err != nil {
			t.Errorf("%s: %v\n%s", q.where, err, q.expr)
			continue
		}
		names := metricNames(expr)
		if len(names) == 0 {
			t.Errorf("%s: reads no metric", q.where)
		}
		for _, n := range names {
			if !strings.HasPrefix(n, "metership_") {
				t.Errorf("%s: reads %q, not a metership_ metric", q.where, n)
			}
		}
	}
}

// TestExpositionCheckCatchesMistakes runs the exposure check on a small
// exposition: a misspelt metric, a label the metric lacks, a label value
// no series has, a by() label and a legend label that do not exist are
// each reported; a correct query is not.
func TestExpositionCheckCatchesMistakes(t *testing.T) {
	e := exposition{}
	e.add("metership_export_runs_total", map[string]string{"result": "success"})
	e.add("metership_export_runs_total", map[string]string{"result": "failure"})
	e.add("metership_uploads_total", nil)
	for _, c := range []struct {
		expr, legend, want string
	}{
		{`sum by (result) (rate(metership_export_runs_total{result="failure", instance=~".+"}[5m]))`, "{{result}} {{instance}}", ""},
		{`rate(metership_upload_total[5m])`, "", "metership_upload_total is not exposed"},
		{`metership_uploads_total{reason="x"}`, "", `has no label "reason"`},
		{`metership_export_runs_total{result="failed"}`, "", `no series with result="failed"`},
		{`sum by (reason) (metership_export_runs_total)`, "", `names label "reason"`},
		{`sum by (result) (metership_export_runs_total)`, "{{code}}", `legend "{{code}}" names label "code"`},
	} {
		expr, err := promParser.ParseExpr(c.expr)
		if err != nil {
			t.Fatal(err)
		}
		got := e.check(expr, c.legend)
		switch {
		case c.want == "" && len(got) > 0:
			t.Errorf("%s: unexpected %v", c.expr, got)
		case c.want != "" && (len(got) != 1 || !strings.Contains(got[0], c.want)):
			t.Errorf("%s: got %v, want one problem containing %q", c.expr, got, c.want)
		}
	}
}

// selectorInfo is one vector selector of a query.
type selectorInfo struct {
	name            string
	filtersInstance bool // has instance=~".+" (the substituted $instance)
}

func metricSelectors(expr parser.Expr) []selectorInfo {
	var out []selectorInfo
	parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok {
			s := selectorInfo{name: selectorName(vs)}
			for _, m := range vs.LabelMatchers {
				if m.Name == "instance" && m.Type == labels.MatchRegexp && m.Value == grafanaVars["instance"] {
					s.filtersInstance = true
				}
			}
			out = append(out, s)
		}
		return nil
	})
	return out
}
