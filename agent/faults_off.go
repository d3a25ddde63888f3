//go:build !faultinject

package main

import "github.com/metership/metership/engine"

// withTestFaults returns opts as they are: disk-fault injection exists
// only in test builds (-tags faultinject, faults_on.go).
func withTestFaults(opts engine.Options) engine.Options { return opts }
