package refs

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestValidateShortName(t *testing.T) {
	long := strings.Repeat("x", MaxComponentLen)
	good := []string{
		"main",
		"feature/x",
		"a/b/c/d",
		"v1.0",
		"v1.0.1-rc2",
		"release_2024",
		"a-b",
		"a.b.c",
		"x@y",
		"{x}",
		"main.locked",
		"lock",
		"café",
		"日本",
		"@x",
		"a@",
		long,
		long + "/" + long,
	}
	for _, name := range good {
		if err := ValidateShortName(name); err != nil {
			t.Errorf("ValidateShortName(%q) = %v, want nil", name, err)
		}
	}

	bad := []struct {
		name, reason string
	}{
		{"", "empty name"},
		{"/main", "starts with '/'"},
		{"main/", "ends with '/'"},
		{"a//b", "empty component"},
		{"..", `contains ".."`},
		{"a/../b", `contains ".."`},
		{"a..b", `contains ".."`},
		{".hidden", `component ".hidden" starts with '.'`},
		{"a/.b", `component ".b" starts with '.'`},
		{".", `component "." starts with '.'`},
		{"a/./b", `component "." starts with '.'`},
		{"main.lock", `component "main.lock" ends with ".lock"`},
		{"a.lock/b", `component "a.lock" ends with ".lock"`},
		{"a b", "contains a space"},
		{"a~1", `contains '~'`},
		{"a^", `contains '^'`},
		{"a:b", `contains ':'`},
		{"a?", `contains '?'`},
		{"a*", `contains '*'`},
		{"a[1]", `contains '['`},
		{`a\b`, `contains '\\'`},
		{"a@{1}", `contains "@{"`},
		{"@", `"@" alone`},
		{"a\tb", "control character U+0009"},
		{"a\nb", "control character U+000A"},
		{"a\x00b", "control character U+0000"},
		{"a\x7fb", "control character U+007F"},
		{"a\xffb", "not valid UTF-8"},
		{long + "x", "longer than 250 bytes"},
		{strings.Repeat(long+"/", 5), "longer than 1024 bytes"},
	}
	for _, tc := range bad {
		err := ValidateShortName(tc.name)
		if err == nil {
			t.Errorf("ValidateShortName(%q) = nil, want error containing %q", tc.name, tc.reason)
			continue
		}
		checkNameError(t, err, tc.name, tc.reason)
	}
}

func TestValidateName(t *testing.T) {
	good := []string{
		"HEAD",
		"ORIG_HEAD",
		"FETCH_HEAD",
		"refs/heads/main",
		"refs/heads/feature/x",
		"refs/tags/v1.0",
		"refs/remotes/origin/main",
		"refs/remotes/origin/HEAD",
		"refs/images/debian-12",
		"refs/machines/web/1",
	}
	for _, name := range good {
		if err := ValidateName(name); err != nil {
			t.Errorf("ValidateName(%q) = %v, want nil", name, err)
		}
	}

	bad := []struct {
		name, reason string
	}{
		{"", "empty name"},
		{"main", `must be "HEAD" or start with "refs/"`},
		{"head", `must be "HEAD" or start with "refs/"`},
		{"heads/main", `must be "HEAD" or start with "refs/"`},
		{"/refs/heads/main", `must be "HEAD" or start with "refs/"`},
		{"REFS", `must be "HEAD" or start with "refs/"`},
		{"LOGS", `must be "HEAD" or start with "refs/"`},
		{"ORIG-HEAD", "only capital letters and '_'"},
		{"_HEAD", "only capital letters and '_'"},
		{"refs", `must be "HEAD" or start with "refs/"`},
		{"refs/", "empty name"},
		{"refs/heads", `must have the form "refs/<namespace>/<name>"`},
		{"refs/heads/", "ends with '/'"},
		{"refs//main", "empty component"},
		{"refs/heads/../x", `contains ".."`},
		{"refs/heads/main.lock", `ends with ".lock"`},
		{"refs/heads/.main", `starts with '.'`},
		{"refs/heads/a b", "contains a space"},
		{"refs/heads/a\nb", "control character"},
		{"refs/heads/" + strings.Repeat("abcdefgh/", 114), "longer than 1024 bytes"},
	}
	for _, tc := range bad {
		err := ValidateName(tc.name)
		if err == nil {
			t.Errorf("ValidateName(%q) = nil, want error containing %q", tc.name, tc.reason)
			continue
		}
		checkNameError(t, err, tc.name, tc.reason)
	}
}

// checkNameError checks that err wraps ErrInvalidName, quotes name, gives
// reason, and is one line.
func checkNameError(t *testing.T, err error, name, reason string) {
	t.Helper()
	msg := err.Error()
	if !errors.Is(err, ErrInvalidName) {
		t.Errorf("error for %q does not wrap ErrInvalidName: %v", name, err)
	}
	if !strings.Contains(msg, reason) {
		t.Errorf("error for %q = %q, want it to contain %q", name, msg, reason)
	}
	if len(name) < 200 && !strings.Contains(msg, fmt.Sprintf("%q", name)) {
		t.Errorf("error for %q = %q, does not name it", name, msg)
	}
	if strings.ContainsAny(msg, "\n\r") {
		t.Errorf("error for %q is not one line: %q", name, msg)
	}
}
