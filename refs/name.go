package refs

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Limits on ref names. They keep every ref path well inside the limits of
// common file systems (255 bytes per path component, 4096 per path).
const (
	// MaxComponentLen is the longest allowed component of a ref name, in
	// bytes. The lock file adds ".lock", so the limit leaves room for it.
	MaxComponentLen = 250
	// MaxNameLen is the longest allowed full ref name, in bytes.
	MaxNameLen = 1024
)

// forbiddenChars are the printable ASCII characters a ref name may not
// contain. Git forbids the same set because they have meaning in revision
// syntax, globs or shells; we follow it so names can be typed unquoted.
const forbiddenChars = " ~^:?*[\\"

// ValidateName reports whether name is a valid full ref name: either a
// one-level name in capitals ending in "HEAD" (such as "HEAD" or
// "ORIG_HEAD"), or "refs/<namespace>/<name...>" (such as "refs/heads/main",
// "refs/remotes/origin/feature/x", "refs/images/debian"), whose components
// after "refs/" obey ValidateShortName. The error wraps ErrInvalidName,
// quotes the name and says in one line what is wrong.
func ValidateName(name string) error {
	if reason := nameProblem(name); reason != "" {
		return fmt.Errorf("%w %q: %s", ErrInvalidName, name, reason)
	}
	return nil
}

// ValidateShortName reports whether name is a valid branch, tag, remote or
// other ref name below a namespace, such as "main" or "feature/x". It is
// one or more components separated by single slashes. No component may be
// empty, start with '.', end with ".lock" or be longer than
// MaxComponentLen bytes. The name may not contain "..", "@{", a control
// character, DEL, a space or any of ~ ^ : ? * [ \, may not be "@", must be
// valid UTF-8 and at most MaxNameLen bytes long. The error wraps
// ErrInvalidName, quotes the name and says in one line what is wrong.
func ValidateShortName(name string) error {
	if reason := shortNameProblem(name); reason != "" {
		return fmt.Errorf("%w %q: %s", ErrInvalidName, name, reason)
	}
	return nil
}

// isPseudoRef reports whether name is a one-level ref such as HEAD: capital
// letters and underscores ending in "HEAD". The suffix keeps such names
// from ever colliding with "refs", "logs" or "objects", even on file
// systems that ignore case.
func isPseudoRef(name string) bool {
	if !strings.HasSuffix(name, "HEAD") {
		return false
	}
	for _, c := range []byte(name) {
		if (c < 'A' || c > 'Z') && c != '_' {
			return false
		}
	}
	return name[0] != '_'
}

// nameProblem returns why name is not a valid full ref name, or "".
func nameProblem(name string) string {
	if isPseudoRef(name) {
		return ""
	}
	if name == "" {
		return "empty name"
	}
	if !strings.HasPrefix(name, "refs/") {
		if !strings.Contains(name, "/") && strings.ToUpper(name) == name && strings.HasSuffix(name, "HEAD") {
			return `one-level names may contain only capital letters and '_'`
		}
		return `must be "HEAD" or start with "refs/"`
	}
	if len(name) > MaxNameLen {
		return fmt.Sprintf("longer than %d bytes", MaxNameLen)
	}
	rest := name[len("refs/"):]
	if strings.HasPrefix(rest, "/") {
		return "contains an empty component (\"//\")"
	}
	if reason := shortNameProblem(rest); reason != "" {
		return reason
	}
	if !strings.Contains(rest, "/") {
		return `must have the form "refs/<namespace>/<name>"`
	}
	return ""
}

// shortNameProblem returns why name is not a valid short ref name, or "".
func shortNameProblem(name string) string {
	switch {
	case name == "":
		return "empty name"
	case len(name) > MaxNameLen:
		return fmt.Sprintf("longer than %d bytes", MaxNameLen)
	case !utf8.ValidString(name):
		return "not valid UTF-8"
	case name == "@":
		return `"@" alone is not allowed`
	case name[0] == '/':
		return "starts with '/'"
	case name[len(name)-1] == '/':
		return "ends with '/'"
	case strings.Contains(name, ".."):
		return `contains ".."`
	case strings.Contains(name, "@{"):
		return `contains "@{"`
	}
	for _, r := range name {
		switch {
		case r < 0x20 || r == 0x7f:
			return fmt.Sprintf("contains control character %U", r)
		case strings.ContainsRune(forbiddenChars, r):
			if r == ' ' {
				return "contains a space"
			}
			return fmt.Sprintf("contains %q", r)
		}
	}
	for _, c := range strings.Split(name, "/") {
		switch {
		case c == "":
			return "contains an empty component (\"//\")"
		case c[0] == '.':
			return fmt.Sprintf("component %q starts with '.'", c)
		case strings.HasSuffix(c, ".lock"):
			return fmt.Sprintf("component %q ends with \".lock\"", c)
		case len(c) > MaxComponentLen:
			return fmt.Sprintf("a component is longer than %d bytes", MaxComponentLen)
		}
	}
	return ""
}
