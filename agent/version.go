package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
)

// Set with -ldflags "-X main.version=... -X main.commit=..." by make build.
var (
	version = "dev"
	commit  = ""
)

// commitString is the commit set at build time, else the VCS revision Go
// recorded, else "unknown".
func commitString() string {
	c := commit
	if c == "" {
		if info, ok := debug.ReadBuildInfo(); ok {
			for _, s := range info.Settings {
				if s.Key == "vcs.revision" {
					c = s.Value
				}
			}
		}
	}
	if c == "" {
		c = "unknown"
	}
	return c
}

func versionString() string {
	return fmt.Sprintf("metership %s (commit %s, %s %s/%s)", version, commitString(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

// buildInfo is metership_build_info, 1 with the version and commit as
// labels, as Prometheus' own *_build_info: every process serving /metrics
// (run, jobs serve) has it, so dashboards can list them.
func buildInfo() prometheus.Collector {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "metership_build_info",
		Help: "Always 1; the labels say which metership version and commit is running."}, []string{"version", "commit", "goversion"})
	g.WithLabelValues(version, commitString(), runtime.Version()).Set(1)
	return g
}
