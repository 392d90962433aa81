package transport

import (
	"strings"
	"testing"
)

// TestParseRefListFormat checks which refs.json formats a client takes:
// 1 (lists written before version 2 objects) and 2; a newer one is
// refused in one line that says to update.
func TestParseRefListFormat(t *testing.T) {
	id := strings.Repeat("ab", 32)
	for _, tc := range []struct {
		format int
		err    string
	}{
		{0, "ref list has format 0, this sbuml reads formats 1 to 2: update sbuml"},
		{1, ""},
		{2, ""},
		{3, "ref list has format 3, this sbuml reads formats 1 to 2: update sbuml"},
	} {
		body := `{"format":` + string(rune('0'+tc.format)) + `,"refs":[{"name":"refs/heads/main","id":"` + id + `"}]}`
		l, err := parseRefList([]byte(body), "remote", 10)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("format %d: %v", tc.format, err)
		case tc.err == "" && l.Get("refs/heads/main").String() != id:
			t.Errorf("format %d: refs/heads/main = %v", tc.format, l.Get("refs/heads/main"))
		case tc.err != "" && (err == nil || err.Error() != "remote: "+tc.err):
			t.Errorf("format %d: error %v, want %q", tc.format, err, tc.err)
		}
	}
}
