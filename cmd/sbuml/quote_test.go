package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/sbuml/sbuml"
)

func TestEscapeText(t *testing.T) {
	tests := []struct {
		in, line, multiline, name string
	}{
		{"plain text", "plain text", "plain text", "plain text"},
		{"ünïcødé ☃", "ünïcødé ☃", "ünïcødé ☃", "ünïcødé ☃"},
		{"two\nlines", `two\nlines`, "two\nlines", `"two\nlines"`},
		{"red \x1b[31m!", `red \x1b[31m!`, `red \x1b[31m!`, `"red \x1b[31m!"`},
		{"title \x1b]0;x\a", `title \x1b]0;x\x07`, `title \x1b]0;x\x07`, `"title \x1b]0;x\x07"`},
		{"tab\tcr\r", `tab\tcr\r`, `tab\tcr\r`, `"tab\tcr\r"`},
		{"del\x7f c1\u009b", `del\x7f c1\u009b`, `del\x7f c1\u009b`, `"del\x7f c1\u009b"`},
		{"bad \xff utf8", `bad \xff utf8`, `bad \xff utf8`, `"bad \xff utf8"`},
		{"trojan \u202eevil", `trojan \u202eevil`, `trojan \u202eevil`, `"trojan \u202eevil"`},
		{`quote " back \ ` + "\x1b", `quote " back \ \x1b`, `quote " back \ \x1b`, `"quote \" back \\ \x1b"`},
		{`quote " alone`, `quote " alone`, `quote " alone`, `quote " alone`},
	}
	for _, tt := range tests {
		if got := escapeText(tt.in, false); got != tt.line {
			t.Errorf("escapeText(%q, false) = %q, want %q", tt.in, got, tt.line)
		}
		if got := escapeText(tt.in, true); got != tt.multiline {
			t.Errorf("escapeText(%q, true) = %q, want %q", tt.in, got, tt.multiline)
		}
		if got := quoteName(tt.in); got != tt.name {
			t.Errorf("quoteName(%q) = %q, want %q", tt.in, got, tt.name)
		}
	}
}

// Messages and file names from snapshots reach the terminal escaped: no
// command prints a control character it did not write itself.
func TestCommandsEscapeSnapshotText(t *testing.T) {
	sb := filepath.Join(t.TempDir(), "sb")
	c := newCLI(t, sb)
	c.ok("init")
	src := t.TempDir()
	evilName := "clear\x1b[2Jscreen"
	writeTestFile(t, filepath.Join(src, evilName), "x", 0o644)
	msg := "retitle \x1b]0;pwned\a the window\nand \x1b[31mpaint\x1b[0m the second line"
	var res sbuml.Result
	c.json(&res, "import", "--json", "-m", msg, src)
	c.ok("tag", "v1")
	var tmp sbuml.Result
	c.json(&tmp, "import", "--json", "-b", "tmp", "-m", msg, src)
	c.ok("branch", "-d", "tmp")
	for _, args := range [][]string{{"log"}, {"log", "--graph", "--all"}, {"show", "main"}, {"du"}, {"gc", "--dry-run"}, {"tag"}} {
		out := c.run(args...)
		if strings.ContainsAny(out.stdout+out.stderr, "\x1b\a") {
			t.Errorf("sbuml %s printed a control character:\n%q", strings.Join(args, " "), out.stdout+out.stderr)
		}
		if out.code != 0 {
			t.Errorf("sbuml %s: exit %d, stderr %q", strings.Join(args, " "), out.code, out.stderr)
		}
	}
	if show := c.ok("show", "main"); !strings.Contains(show, `"clear\x1b[2Jscreen"`) || !strings.Contains(show, `    and \x1b[31mpaint\x1b[0m the second line`) {
		t.Errorf("show printed:\n%s\nwant the file name quoted and the message escaped", show)
	}
	out := c.run("show", "nosuch\x1b[2J")
	if out.code != 1 || strings.Contains(out.stderr, "\x1b") {
		t.Errorf("an error naming an argument with a control character: exit %d, stderr %q", out.code, out.stderr)
	}
}
