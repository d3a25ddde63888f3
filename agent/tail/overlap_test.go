package tail

import "testing"

func TestGlobsOverlap(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want bool
	}{
		{"/logs/*.log", "/logs/app*", true},
		{"/logs/*.log", "/logs/*.txt", false},
		{"/logs/*.log", "/logs/app.log", true},
		{"/logs/*.log", "/other/*.log", false},
		{"/logs/*", "/logs/*/x.log", false}, // '*' never crosses a '/'
		{"/logs/*/*.log", "/logs/a/b.log", true},
		{"/logs/a?c", "/logs/abc", true},
		{"/logs/a?c", "/logs/a/c", false},
		{"/logs/[a-c].log", "/logs/b.log", true},
		{"/logs/[a-c].log", "/logs/[d-f].log", false},
		{"/logs/[^a].log", "/logs/a.log", false},
		{"/logs/[^a].log", "/logs/[ab].log", true},
		{"/logs/*a*", "/logs/*b*", true},
		{"/logs/x*", "/logs/y*", false},
		{`/logs/\*.log`, "/logs/*.log", true},
		{`/logs/\*.log`, "/logs/a.log", false},
		{"/logs/[", "/logs/*", false}, // malformed: New reports it
	} {
		if got := GlobsOverlap(c.a, c.b); got != c.want {
			t.Errorf("GlobsOverlap(%q, %q) = %v, want %v", c.a, c.b, got, c.want)
		}
		if got := GlobsOverlap(c.b, c.a); got != c.want {
			t.Errorf("GlobsOverlap(%q, %q) = %v, want %v", c.b, c.a, got, c.want)
		}
	}
}

func TestOverlaps(t *testing.T) {
	got := Overlaps([]Input{
		{Name: "sources[0]", Paths: []string{"/a/*.log", "/b/*.log"}},
		{Name: "sources[1]", Paths: []string{"/a/app*"}},
		{Name: "sources[2]", Paths: []string{"/c/*"}},
	})
	want := []Overlap{{First: `sources[0] "/a/*.log"`, Second: `sources[1] "/a/app*"`}}
	if len(got) != 1 || got[0] != want[0] {
		t.Fatalf("Overlaps = %+v, want %+v", got, want)
	}
}
