package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/sbuml/sbuml"
)

// fails runs the command, expects it to fail with one line on stderr
// saying each of parts, and returns that line.
func (c *cli) fails(args []string, parts ...string) string {
	c.t.Helper()
	out := c.run(args...)
	if out.code != 1 || out.stdout != "" || strings.Count(out.stderr, "\n") != 1 || !strings.HasPrefix(out.stderr, "sbuml: ") {
		c.t.Fatalf("sbuml %s: exit %d, stdout %q, stderr %q; want exit 1 and one line on stderr", strings.Join(args, " "), out.code, out.stdout, out.stderr)
	}
	for _, p := range parts {
		if !strings.Contains(out.stderr, p) {
			c.t.Errorf("sbuml %s: stderr %q does not say %q", strings.Join(args, " "), out.stderr, p)
		}
	}
	return out.stderr
}

// Deleting the current branch, and naming a branch or tag so that it
// hides HEAD or snapshot IDs, need --force; gc --dry-run names the
// snapshots it would remove.
func TestRefSafety(t *testing.T) {
	sb := filepath.Join(t.TempDir(), "sb")
	c := newCLI(t, sb)
	c.ok("init")
	src := t.TempDir()
	writeTestFile(t, filepath.Join(src, "f"), "one", 0o644)
	var main sbuml.Result
	c.json(&main, "import", "--json", src)

	c.fails([]string{"branch", "-d", "main"}, "current branch", "--force")
	c.ok("log", "main")
	for _, args := range [][]string{
		{"tag", "HEAD"},
		{"branch", "HEAD", "main"},
		{"tag", main.ID.String()},
		{"branch", main.ID.Short()},
		{"tag", "cafe"},
	} {
		c.fails(args, "--force")
	}
	c.ok("tag", "-f", "cafe")
	c.ok("tag", "v1.0")
	c.ok("branch", "feature")
	c.ok("branch", "-d", "feature")

	writeTestFile(t, filepath.Join(src, "f"), "two", 0o644)
	var tmp sbuml.Result
	c.json(&tmp, "import", "--json", "-b", "tmp", "-m", "throwaway work", src)
	c.ok("branch", "-d", "tmp")
	out := c.ok("gc", "--dry-run")
	if !strings.HasPrefix(out, "would remove "+tmp.ID.Short()+" ") || !strings.Contains(out, "  throwaway work\n") {
		t.Errorf("gc --dry-run printed:\n%s\nwant it to name %s, throwaway work", out, tmp.ID.Short())
	}
	var gc sbuml.GcReport
	c.json(&gc, "gc", "--dry-run", "--json")
	if len(gc.Snapshots) != 1 || gc.Snapshots[0].ID != tmp.ID || gc.Snapshots[0].Message != "throwaway work" {
		t.Errorf("gc --dry-run --json lists %+v, want only %s", gc.Snapshots, tmp.ID.Short())
	}
	c.ok("branch", "-d", "--force", "main")
	c.fails([]string{"log", "main"}, "main")
}
