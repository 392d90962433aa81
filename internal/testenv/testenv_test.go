package testenv

import (
	"errors"
	"fmt"
	"testing"
)

// recorder is a testing.TB that records what Need asked of it.
type recorder struct {
	testing.TB
	fatal, skip string
}

func (r *recorder) Helper()                           {}
func (r *recorder) Fatalf(format string, args ...any) { r.fatal = fmt.Sprintf(format, args...) }
func (r *recorder) Skipf(format string, args ...any)  { r.skip = fmt.Sprintf(format, args...) }

func TestNeed(t *testing.T) {
	missing := errors.New("no such thing")
	tests := []struct {
		name             string
		ci               string
		err              error
		wantFail, wantSk bool
	}{
		{"present", "", nil, false, false},
		{"present in CI", "true", nil, false, false},
		{"missing", "", missing, false, true},
		{"missing in CI", "true", missing, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("CI", tt.ci)
			r := &recorder{TB: t}
			Need(r, "a thing", tt.err)
			if (r.fatal != "") != tt.wantFail || (r.skip != "") != tt.wantSk {
				t.Errorf("Need: failed %q, skipped %q; want failure %v, skip %v", r.fatal, r.skip, tt.wantFail, tt.wantSk)
			}
		})
	}
}
