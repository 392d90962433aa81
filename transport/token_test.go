package transport

import (
	"strings"
	"testing"
)

// The push token going over plain http to another host is warned about,
// once; to this machine, or over https, it is not. (No request is sent:
// tests talk only to this machine.)
func TestWarnPlainToken(t *testing.T) {
	for _, tc := range []struct {
		base string
		warn bool
	}{
		{"http://example.org/book/", true},
		{"http://10.0.0.1:8417/", true},
		{"https://example.org/book/", false},
		{"http://127.0.0.1:8417/", false},
		{"http://127.9.9.9/", false},
		{"http://localhost:8417/", false},
		{"http://[::1]:8417/", false},
	} {
		var warnings []string
		s := newSmart(tc.base, "token", newClient(nil, Limits{}), func(msg string) { warnings = append(warnings, msg) })
		s.warnPlainToken()
		s.warnPlainToken()
		switch {
		case tc.warn && (len(warnings) != 1 || !strings.Contains(warnings[0], "plain http")):
			t.Errorf("%s: warnings %q, want one about plain http", tc.base, warnings)
		case !tc.warn && len(warnings) != 0:
			t.Errorf("%s: warnings %q, want none", tc.base, warnings)
		}
	}
}
