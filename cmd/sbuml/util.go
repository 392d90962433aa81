package main

import (
	"encoding/json"
	"fmt"
	"github.com/sbuml/sbuml/internal/units"
	"os"
	"strings"
	"time"

	"github.com/sbuml/sbuml"
	"github.com/sbuml/sbuml/stream"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

// oneLine folds an error message onto a single line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// addJSONFlag gives a read command its --json flag.
func addJSONFlag(c *cobra.Command) {
	c.Flags().BoolVar(&flagJSON, "json", false, "print machine-readable JSON")
}

// printJSON writes v as indented JSON to stdout.
func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

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
func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// humanBytes formats n with a binary unit.
func humanBytes[T int64 | uint64 | int](n T) string { return units.Bytes(n) }

// storeProgress returns a progress callback that redraws one status line
// on stderr when it is a terminal, and nil (no progress) otherwise.
func storeProgress(verb string) (func(stream.Stats), func()) {
	if !isTerminal(os.Stderr) {
		return nil, func() {}
	}
	start := time.Now()
	report := func(s stream.Stats) {
		secs := time.Since(start).Seconds()
		fmt.Fprintf(os.Stderr, "\r\x1b[K%s %s (%.0f MiB/s), %s new", verb, humanBytes(s.LogicalBytes),
			float64(s.LogicalBytes)/(1<<20)/max(secs, 0.001), humanBytes(s.NewBytes))
	}
	return report, func() { fmt.Fprint(os.Stderr, "\r\x1b[K") }
}

// pluralS returns "s" unless n is 1: fmt.Sprintf("%d snapshot%s", n, pluralS(n)).
func pluralS(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
