package main

import (
	"os"
	"strings"

	"github.com/sbuml/sbuml"
	"github.com/sbuml/sbuml/internal/units"
	"golang.org/x/term"
)

// scrapbookDir returns the --scrapbook flag, else the default directory.
func scrapbookDir() string {
	if flagScrapbook != "" {
		return flagScrapbook
	}
	return sbuml.DefaultDir()
}

// openScrapbook opens the scrapbook the flags name.
func openScrapbook() (*sbuml.Scrapbook, error) {
	return sbuml.Open(scrapbookDir())
}

// isTerminal reports whether f is a terminal.
func isTerminal(f *os.File) bool { return term.IsTerminal(int(f.Fd())) }

// humanBytes formats n with a binary unit.
func humanBytes[T int64 | uint64 | int](n T) string { return units.Bytes(n) }

// pluralS returns "s" unless n is 1: fmt.Sprintf("%d snapshot%s", n, pluralS(n)).
func pluralS(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// shortRef is how text output names a ref: a branch by its name, a tag
// as tag:NAME, a remote-tracking branch as REMOTE/NAME, any other ref
// without its refs/. JSON always gives the full name.
func shortRef(name string) string {
	for _, p := range []string{"refs/heads/", "refs/tags/", "refs/remotes/"} {
		if rest, ok := strings.CutPrefix(name, p); ok {
			if p == "refs/tags/" {
				return "tag:" + rest
			}
			return rest
		}
	}
	return strings.TrimPrefix(name, "refs/")
}
