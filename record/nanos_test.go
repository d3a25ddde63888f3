package record

import "testing"

func TestParseNanos(t *testing.T) {
	tests := []struct {
		in   string
		want string // big-integer nanos, or "" for invalid
	}{
		{"0", "0"},
		{"1", "1000000000"},
		{"0.1", "100000000"},
		{"1.5", "1500000000"},
		{"123.123456789", "123123456789"},
		{"0.0000000019", "1"},
		{"1e3", "1000000000000"},
		{"1.5E-3", "1500000"},
		{"2.5e+2", "250000000000"},
		{"123456789012345678901234", "123456789012345678901234000000000"},
		{"999999999999999999", "999999999999999999000000000"},
		{"-1", ""},
		{"abc", ""},
		{"", ""},
		{"1.", ""},
		{".5", ""},
		{"1e", ""},
		{"0x10", ""},
		{"Infinity", ""},
	}
	for _, tt := range tests {
		got, ok := ParseNanos([]byte(tt.in))
		switch {
		case tt.want == "" && ok:
			t.Errorf("ParseNanos(%q) = %s, want invalid", tt.in, got.Big())
		case tt.want != "" && !ok:
			t.Errorf("ParseNanos(%q) invalid, want %s", tt.in, tt.want)
		case ok && got.Big().String() != tt.want:
			t.Errorf("ParseNanos(%q) = %s, want %s", tt.in, got.Big(), tt.want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { ParseNanos([]byte("12345.6789")) }); n != 0 {
		t.Errorf("ParseNanos allocates %.0f times on the fast path", n)
	}
}
