package ship

import (
	"regexp"
	"testing"
)

// CollisionKey is deterministic per content, differs for other content,
// and keeps the object in its partition: it replaces $UUID, or, in a
// format without one, extends the file name before its extension.
func TestCollisionKey(t *testing.T) {
	for _, tc := range []struct {
		format string
		want   *regexp.Regexp
	}{
		{DefaultKeyFormat, regexp.MustCompile(`^06-07-2022/[0-9a-f-]{36}\.gz$`)},
		{"%Y/%m/%d/$INDEX.json.gz", regexp.MustCompile(`^2022/06/07/7-[0-9a-f-]{36}\.json\.gz$`)},
		{"%Y/%m/%d/batch-$INDEX", regexp.MustCompile(`^2022/06/07/batch-7-[0-9a-f-]{36}$`)},
	} {
		e := mustEncoder(t, EncoderOptions{Key: mustKey(t, "", tc.format)})
		encode := func(i int) Object {
			objs, err := e.Encode("inst", 7, segment{rec(ts, meter(i, ts))})
			if err != nil || len(objs) != 1 {
				t.Fatalf("Encode: %v %d", err, len(objs))
			}
			return objs[0]
		}
		a, again, other := encode(1), encode(1), encode(2)
		ka, err := a.CollisionKey()
		if err != nil {
			t.Fatal(err)
		}
		kAgain, _ := again.CollisionKey()
		kOther, _ := other.CollisionKey()
		if !tc.want.MatchString(ka) || ka == a.Key {
			t.Errorf("%s: fresh key %q for %q", tc.format, ka, a.Key)
		}
		if kAgain != ka || kOther == ka {
			t.Errorf("%s: fresh keys %q (same content) %q (other content), from %q", tc.format, kAgain, kOther, ka)
		}
	}
}
