package conf

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Size is a byte count written as a plain number or with a unit: 8MiB,
// 1GiB, 512KiB, 10MB, 64k. Binary (KiB) and decimal (KB) units both work;
// bare K/M/G are binary, as in Fluent Bit.
type Size int64

// ParseSize parses a Size.
func ParseSize(s string) (Size, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, fmt.Errorf("empty size")
	}
	i := len(s)
	for i > 0 && (s[i-1] < '0' || s[i-1] > '9') && s[i-1] != '.' {
		i--
	}
	num, unit := strings.TrimSpace(s[:i]), strings.ToLower(strings.TrimSpace(s[i:]))
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || f < 0 || math.IsInf(f, 0) {
		return 0, fmt.Errorf("%q is not a size; use e.g. 8MiB, 1GiB, 1048576", s)
	}
	mult := map[string]float64{
		"": 1, "b": 1,
		"k": 1 << 10, "kb": 1e3, "kib": 1 << 10,
		"m": 1 << 20, "mb": 1e6, "mib": 1 << 20,
		"g": 1 << 30, "gb": 1e9, "gib": 1 << 30,
		"t": 1 << 40, "tb": 1e12, "tib": 1 << 40,
	}[unit]
	if mult == 0 {
		return 0, fmt.Errorf("%q has an unknown unit %q; use B, KiB, MiB, GiB, TiB, KB, MB, GB, TB", s, s[i:])
	}
	v := f * mult
	if v > math.MaxInt64/2 {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return Size(v), nil
}

// String renders the size with the largest exact binary unit.
func (s Size) String() string {
	for _, u := range []struct {
		name string
		n    int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if s != 0 && int64(s)%u.n == 0 {
			return strconv.FormatInt(int64(s)/u.n, 10) + u.name
		}
	}
	return strconv.FormatInt(int64(s), 10)
}

// UnmarshalYAML accepts numbers and strings with units.
func (s *Size) UnmarshalYAML(n *yaml.Node) error {
	v, err := ParseSize(n.Value)
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// MarshalYAML renders the human form.
func (s Size) MarshalYAML() (any, error) { return s.String(), nil }

// Duration is a time.Duration written like 60s, 5m, 1h30m; a bare number
// means seconds, as in Fluent Bit.
type Duration time.Duration

// ParseDuration parses a Duration.
func ParseDuration(s string) (Duration, error) {
	s = strings.TrimSpace(s)
	if n, err := strconv.ParseFloat(s, 64); err == nil {
		return Duration(n * float64(time.Second)), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration; use e.g. 60s, 5m, 1h", s)
	}
	return Duration(d), nil
}

// D returns the time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// UnmarshalYAML accepts duration strings and numbers of seconds.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := ParseDuration(n.Value)
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// MarshalYAML renders the duration as a string.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// SyncMode is buffer.sync: when a write is fsynced.
type SyncMode string

// The buffer.sync values.
const (
	SyncAlways   SyncMode = "always"   // before Write returns (group commit)
	SyncInterval SyncMode = "interval" // every buffer.sync_interval
	SyncNever    SyncMode = "never"    // left to the OS
)

// UnmarshalText accepts the buffer.sync values only.
func (m *SyncMode) UnmarshalText(b []byte) error {
	return parseEnum(m, string(b), SyncAlways, SyncInterval, SyncNever)
}

// UnmarshalYAML accepts the buffer.sync values only.
func (m *SyncMode) UnmarshalYAML(n *yaml.Node) error { return m.UnmarshalText([]byte(n.Value)) }

// MeteringMode is metering.mode: off, or the AWS Marketplace API usage is
// reported with.
type MeteringMode string

// The metering.mode values.
const (
	MeteringOff             MeteringMode = "off"
	MeteringMeterUsage      MeteringMode = "meter_usage"
	MeteringBatchMeterUsage MeteringMode = "batch_meter_usage"
)

// On reports whether usage is metered.
func (m MeteringMode) On() bool { return m == MeteringMeterUsage || m == MeteringBatchMeterUsage }

// UnmarshalText accepts the metering.mode values only.
func (m *MeteringMode) UnmarshalText(b []byte) error {
	return parseEnum(m, string(b), MeteringOff, MeteringMeterUsage, MeteringBatchMeterUsage)
}

// UnmarshalYAML accepts the metering.mode values only.
func (m *MeteringMode) UnmarshalYAML(n *yaml.Node) error { return m.UnmarshalText([]byte(n.Value)) }

// parseEnum sets *dst to the allowed value s, with the same message the
// rules give (Errors.OneOf).
func parseEnum[T ~string](dst *T, s string, allowed ...T) error {
	if !slices.Contains(allowed, T(s)) {
		names := make([]string, len(allowed))
		for i, a := range allowed {
			names[i] = string(a)
		}
		return fmt.Errorf("%q not supported; use %s", s, strings.Join(names, ", "))
	}
	*dst = T(s)
	return nil
}
