package export

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/metership/metership/ship"
)

// SQLTable is the table name the generated SQL reads.
const SQLTable = "metership_usage"

// Query is the export as SQL for Athena / Trino, over the shipped NDJSON.
type Query struct {
	// Table is the CREATE EXTERNAL TABLE statement for the shipped objects
	// (the OpenX JSON SerDe reads gzipped NDJSON; every object under the
	// location, in any dated sub-folder, is read).
	Table string `json:"table"`
	// SQL returns the same rows as the runner, in the same order, with
	// columns time, meterApiName, the groupBy names and value.
	SQL string `json:"sql"`
}

// TableDDL is the table definition for the shipped objects at source
// (output.url).
func TableDDL(source ship.Destination) string {
	loc := "s3://" + source.Bucket + "/"
	if source.Prefix != "" {
		loc += source.Prefix + "/"
	}
	if source.Scheme == ship.SchemeFile {
		loc = source.String() + "/"
	}
	return "CREATE EXTERNAL TABLE IF NOT EXISTS " + SQLTable + " (\n" +
		"  customerId string,\n" +
		"  meterApiName string,\n" +
		"  meterValue decimal(38,9),\n" +
		"  meterTimeInMillis bigint,\n" +
		"  dimensions map<string,string>,\n" +
		"  uniqueId string\n" +
		")\n" +
		"ROW FORMAT SERDE 'org.openx.data.jsonserde.JsonSerDe'\n" +
		"LOCATION " + quote(loc)
}

// SQL is the plan as one Trino / Athena SELECT over TableDDL's table.
// Buckets are date_trunc over from_unixtime (UTC; Trino's weeks start on
// Monday, like the runner's); sums are decimal(38,9), exact like the
// runner's nanos; the rescale multiplies the sum and rounds to nine
// decimals. A non-sparse plan crosses every group seen with the window's
// bucket starts, listed as VALUES so the query needs no sequence().
func (p *Plan) SQL() string {
	var b strings.Builder
	cols := []string{"meterApiName"}
	for _, g := range p.GroupBy {
		cols = append(cols, ident(g))
	}
	b.WriteString("WITH filtered AS (\n  SELECT CAST(to_unixtime(date_trunc(" + quote(p.Bucket) + ", from_unixtime(meterTimeInMillis / 1000))) AS bigint) AS export_bucket,\n    meterApiName")
	for _, g := range p.GroupBy {
		fmt.Fprintf(&b, ",\n    %s AS %s", dimExpr(g), ident(g))
	}
	b.WriteString(",\n    meterValue\n  FROM " + SQLTable + "\n")
	fmt.Fprintf(&b, "  WHERE meterTimeInMillis >= %d AND meterTimeInMillis < %d", p.StartTimeSeconds*1000, p.EndTimeSeconds*1000)
	if len(p.Meters) > 0 {
		fmt.Fprintf(&b, "\n    AND meterApiName IN (%s)", quoteList(p.Meters))
	}
	keys := make([]string, 0, len(p.Filter))
	for k := range p.Filter {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "\n    AND %s IN (%s)", rawDimExpr(k), quoteList(p.Filter[k]))
	}
	b.WriteString("\n),\nsums AS (\n  SELECT export_bucket, " + strings.Join(cols, ", ") + ", sum(meterValue) AS export_total\n  FROM filtered\n  GROUP BY export_bucket, " + strings.Join(cols, ", ") + "\n)")
	value := "export_total"
	if !p.Sparse {
		b.WriteString(",\ngroups AS (\n  SELECT DISTINCT " + strings.Join(cols, ", ") + " FROM sums\n),\nbuckets AS (\n  SELECT export_bucket FROM (VALUES ")
		for i, t := range p.Window().Buckets(p.Bucket) {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString("(" + strconv.FormatInt(t.Unix(), 10) + ")")
		}
		b.WriteString(") AS v(export_bucket)\n),\ngrid AS (\n  SELECT buckets.export_bucket, ")
		for i, c := range cols {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString("groups." + c)
		}
		b.WriteString(", coalesce(sums.export_total, CAST(0 AS decimal(38,9))) AS export_total\n  FROM buckets CROSS JOIN groups\n  LEFT JOIN sums ON sums.export_bucket = buckets.export_bucket")
		for _, c := range cols {
			fmt.Fprintf(&b, " AND sums.%s = groups.%s", c, c)
		}
		b.WriteString("\n)")
	}
	if p.Rescale != nil {
		value = "CAST(export_total * " + p.Rescale.sqlLiteral() + " AS decimal(38,9))"
	}
	from := "sums"
	if !p.Sparse {
		from = "grid"
	}
	b.WriteString("\nSELECT format_datetime(from_unixtime(export_bucket), 'yyyy-MM-dd''T''HH:mm:ss''Z''') AS \"time\", " + strings.Join(cols, ", ") + ", " + value + " AS value\nFROM " + from + "\nORDER BY export_bucket, " + strings.Join(cols, ", "))
	return b.String()
}

// dimExpr is a groupBy column: the customer, or the dimension (” when a
// record lacks it, as in the runner's output).
func dimExpr(name string) string {
	if name == "customerId" {
		return "customerId"
	}
	return "coalesce(" + rawDimExpr(name) + ", '')"
}

// rawDimExpr reads a dimension; element_at is NULL for a missing key
// where dimensions[...] would fail in Trino.
func rawDimExpr(name string) string {
	if name == "customerId" {
		return "customerId"
	}
	return "element_at(dimensions, " + quote(name) + ")"
}

func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

func ident(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

func quoteList(vals []string) string {
	q := make([]string, len(vals))
	for i, v := range vals {
		q[i] = quote(v)
	}
	return strings.Join(q, ", ")
}

// sqlLiteral is the coefficient as an exact SQL decimal, typed with just
// the digits it has so the product keeps the sum's range.
func (r *Rescale) sqlLiteral() string {
	q, _ := r.rat()
	s := decimalScale(q)
	text := q.FloatString(s)
	digits := len(strings.TrimLeft(strings.Replace(text, ".", "", 1), "0"))
	return fmt.Sprintf("CAST(%s AS decimal(%d,%d))", text, max(digits, s, 1), s)
}
