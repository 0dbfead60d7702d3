// Command monitoring-lint checks the chart's monitoring content offline, with the
// parsers of the projects that consume it:
//
//	monitoring-lint promql < exprs.json   PromQL: stdin is a JSON array of expressions;
//	                                      stdout a JSON array, per expression, of its
//	                                      parse error or its series selectors
//	monitoring-lint dashboard FILE        Grafana: strict decode of a dashboard (classic
//	                                      JSON model, panel options and Prometheus
//	                                      queries included), then Validate()
//
// The PromQL parser is Prometheus' own (promql/parser); the dashboard types are the
// Grafana Foundation SDK's, generated from Grafana's schemas. Exit status: 0 when the
// command ran (promql reports errors in its output), 1 on an invalid dashboard, 2 on
// bad usage or input. Built by scripts/helm-tools.sh into .cache/bin.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/plugins"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

// Matcher is one label matcher of a selector, e.g. {"label": "job", "op": "=~", "value": "$job"}.
type Matcher struct {
	Label string `json:"label"`
	Op    string `json:"op"`
	Value string `json:"value"`
}

// Selector is one instant or range vector selector; Name is empty unless the metric
// name is given exactly (a bare name or __name__="...").
type Selector struct {
	Name     string    `json:"name"`
	Matchers []Matcher `json:"matchers"`
}

// Report is what promql prints for one expression.
type Report struct {
	Error     string     `json:"error,omitempty"`
	Selectors []Selector `json:"selectors"`
}

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	switch os.Args[1] {
	case "promql":
		os.Exit(promql(os.Stdin, os.Stdout))
	case "dashboard":
		if len(os.Args) != 3 {
			usage()
		}
		os.Exit(checkDashboard(os.Args[2]))
	default:
		usage()
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: monitoring-lint promql < exprs.json | monitoring-lint dashboard FILE")
	os.Exit(2)
}

func promql(in io.Reader, out io.Writer) int {
	var exprs []string
	if err := json.NewDecoder(in).Decode(&exprs); err != nil {
		fmt.Fprintln(os.Stderr, "monitoring-lint: stdin is not a JSON array of strings:", err)
		return 2
	}
	p := parser.NewParser(parser.Options{})
	reports := make([]Report, 0, len(exprs))
	for _, expr := range exprs {
		reports = append(reports, inspect(p, expr))
	}
	if err := json.NewEncoder(out).Encode(reports); err != nil {
		fmt.Fprintln(os.Stderr, "monitoring-lint:", err)
		return 2
	}
	return 0
}

func inspect(p parser.Parser, expr string) Report {
	report := Report{Selectors: []Selector{}}
	parsed, err := p.ParseExpr(expr)
	if err != nil {
		report.Error = err.Error()
		return report
	}
	parser.Inspect(parsed, func(node parser.Node, _ []parser.Node) error {
		if vs, ok := node.(*parser.VectorSelector); ok {
			report.Selectors = append(report.Selectors, describe(vs))
		}
		return nil
	})
	return report
}

func describe(vs *parser.VectorSelector) Selector {
	selector := Selector{Name: vs.Name, Matchers: []Matcher{}}
	for _, m := range vs.LabelMatchers {
		if m.Name == labels.MetricName {
			if m.Type == labels.MatchEqual {
				selector.Name = m.Value
			}
			continue
		}
		selector.Matchers = append(selector.Matchers, Matcher{m.Name, m.Type.String(), m.Value})
	}
	return selector
}

func checkDashboard(path string) int {
	raw, err := os.ReadFile(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "monitoring-lint:", err)
		return 2
	}
	// Panel options, field config and queries are checked by the plugins' own types.
	plugins.RegisterDefaultPlugins()
	var board dashboard.Dashboard
	for _, err := range []error{board.UnmarshalJSONStrict(raw), board.Validate()} {
		if failed(err) {
			fmt.Fprintf(os.Stderr, "%s: %v\n", path, err)
			return 1
		}
	}
	return 0
}

// failed: the SDK returns its error list typed (cog.BuildErrors) even when it is empty.
func failed(err error) bool {
	var list cog.BuildErrors
	if errors.As(err, &list) {
		return len(list) > 0
	}
	return err != nil
}
