package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/sbuml/sbuml/internal/testenv"
	"github.com/spf13/cobra"
)

// streaming are the commands that report nothing: they stream a guest's
// or a server's output, or write files of another kind.
var streaming = map[string]bool{
	"sbuml console": true, "sbuml exec": true, "sbuml cp": true, "sbuml ssh": true, "sbuml vnc": true,
	"sbuml serve": true, "sbuml ui": true, "sbuml man": true,
}

// eachCommand calls fn for every command a user can run.
func eachCommand(c *cobra.Command, fn func(*cobra.Command)) {
	if c.Runnable() && c.Name() != "help" && !strings.HasPrefix(c.CommandPath(), "sbuml completion") {
		fn(c)
	}
	for _, sub := range c.Commands() {
		eachCommand(sub, fn)
	}
}

// TestEveryCommandHelp checks the help of every command: it has
// examples, and every command that reports something takes --json.
func TestEveryCommandHelp(t *testing.T) {
	eachCommand(rootCmd, func(c *cobra.Command) {
		if strings.TrimSpace(c.Example) == "" {
			t.Errorf("%s: its help has no examples", c.CommandPath())
		}
		if !streaming[c.CommandPath()] && c.Flags().Lookup("json") == nil {
			t.Errorf("%s reports something but has no --json", c.CommandPath())
		}
	})
	for _, group := range []string{"remote", "image"} {
		for _, sub := range mustFind(t, group).Commands() {
			if strings.TrimSpace(sub.Example) == "" {
				t.Errorf("%s: its help has no examples", sub.CommandPath())
			}
		}
	}
}

func mustFind(t *testing.T, name string) *cobra.Command {
	t.Helper()
	c, _, err := rootCmd.Find([]string{name})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestVersion: sbuml --version says the version, the commit, the Go that
// built it and the QEMU it would run.
func TestVersion(t *testing.T) {
	out := newCLI(t, "").ok("--version")
	for _, want := range []string{`(?m)^sbuml \S+$`, `(?m)^commit \S+$`, `(?m)^go     go1\.\d+`, `(?m)^qemu   (\d+\.\d+|none: )`} {
		if !regexp.MustCompile(want).MatchString(out) {
			t.Errorf("--version printed\n%s\nwith no line matching %s", out, want)
		}
	}
}

// TestManPages: sbuml man writes a page for sbuml and for every command,
// made from its help, examples included.
func TestManPages(t *testing.T) {
	dir := t.TempDir()
	newCLI(t, "").ok("man", "--dir", dir)
	for _, page := range []string{"sbuml.1", "sbuml-commit.1", "sbuml-remote-add.1", "sbuml-image-build.1"} {
		b, err := os.ReadFile(filepath.Join(dir, page))
		if err != nil {
			t.Errorf("no man page %s: %v", page, err)
			continue
		}
		if !strings.Contains(string(b), `.TH "SBUML"`) || !strings.Contains(string(b), "EXAMPLE") {
			t.Errorf("%s is no man page with examples:\n%.300s", page, b)
		}
	}
}

// TestCompletion: the shell completion offers the scrapbook's names and
// the values of flags.
func TestCompletion(t *testing.T) {
	sb := filepath.Join(t.TempDir(), "sb")
	c := newCLI(t, sb)
	c.ok("init")
	src := t.TempDir()
	writeTestFile(t, filepath.Join(src, "f"), "x", 0o644)
	c.ok("import", src, "-m", "one")
	c.ok("branch", "side")
	c.ok("tag", "v1")
	c.ok("remote", "add", "origin", t.TempDir())
	c.ok("remote", "add", "backup", t.TempDir())
	if err := os.MkdirAll(filepath.Join(sb, "machines", "m7"), 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"checkout", ""}, []string{"main", "side", "v1"}},
		{[]string{"log", "s"}, []string{"side"}},
		{[]string{"push", ""}, []string{"backup", "origin"}},
		{[]string{"push", "origin", ""}, []string{"main", "side", "v1"}},
		{[]string{"halt", ""}, []string{"m7"}},
		{[]string{"halt", "m7", ""}, []string{"m7"}},
		{[]string{"commit", ""}, []string{"m7"}},
		{[]string{"tag", "-d", ""}, []string{"v1"}},
		{[]string{"boot", "m8", "--accel", ""}, []string{"auto", "kvm", "tcg"}},
		{[]string{"boot", "m8", "--net", ""}, []string{"none", "user"}},
		{[]string{"import", "x", "--branch", ""}, []string{"main", "side"}},
		{[]string{"remote", "rm", ""}, []string{"backup", "origin"}},
	}
	for _, tt := range tests {
		out := c.run(append([]string{"__complete"}, tt.args...)...).stdout
		lines := strings.Split(strings.TrimSpace(out), "\n")
		got := lines[:len(lines)-1] // the last line is the directive
		slices.Sort(got)
		if !slices.Equal(got, tt.want) {
			t.Errorf("completing %q: %q, want %q", tt.args, got, tt.want)
		}
	}
	if out := c.ok("completion", "bash"); !strings.Contains(out, "__start_sbuml") {
		t.Errorf("completion bash printed no bash completion script")
	}
}

// TestJSONConventions runs the reporting commands with --json on a small
// scrapbook: every key is snake_case, no value is null (an empty list is
// [], an empty object {}), and refs are full names.
func TestJSONConventions(t *testing.T) {
	sb := filepath.Join(t.TempDir(), "sb")
	c := newCLI(t, sb)
	c.ok("init", "--json")
	src := t.TempDir()
	writeTestFile(t, filepath.Join(src, "f"), "hello", 0o644)
	c.ok("import", src, "-m", "one", "--json")
	runs := [][]string{
		{"init", "--json", t.TempDir()},
		{"log", "--json"}, {"show", "--json", "main"}, {"du", "--json"}, {"fsck", "--json"},
		{"gc", "--json"}, {"gc", "--dry-run", "--json"},
		{"branch", "--json"}, {"branch", "side", "--json"}, {"tag", "--json"}, {"tag", "v1", "--json"},
		{"tag", "-d", "v1", "--json"},
		{"export", "main", filepath.Join(t.TempDir(), "out"), "--json"},
		{"remote", "ls", "--json"}, {"remote", "add", "r", t.TempDir(), "--json"}, {"remote", "rm", "r", "--json"},
		{"ps", "--json"}, {"image", "ls", "--json"},
		{"cat-object", "--json", "main"},
	}
	for _, args := range runs {
		out := c.ok(args...)
		var v any
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			t.Errorf("sbuml %s: not JSON: %v\n%s", strings.Join(args, " "), err, out)
			continue
		}
		checkJSON(t, strings.Join(args, " "), "", v)
	}
	var log []struct {
		Refs []string `json:"refs"`
	}
	if err := json.Unmarshal([]byte(c.ok("log", "--json")), &log); err != nil {
		t.Fatal(err)
	}
	if len(log) != 1 || !slices.Equal(log[0].Refs, []string{"refs/heads/main", "refs/heads/side"}) {
		t.Errorf("log --json refs: %+v, want full names", log)
	}
	var branches []refReport
	c.json(&branches, "branch", "--json")
	if len(branches) != 2 || branches[0].Name != "refs/heads/main" {
		t.Errorf("branch --json: %+v, want full names", branches)
	}
}

var snakeKey = regexp.MustCompile(`^[a-z][a-z0-9]*(_[a-z0-9]+)*$`)

// checkJSON fails on a null value or a key that is not snake_case
// anywhere in v.
func checkJSON(t *testing.T, cmd, path string, v any) {
	t.Helper()
	switch x := v.(type) {
	case nil:
		t.Errorf("sbuml %s: %s is null", cmd, path)
	case map[string]any:
		for k, e := range x {
			// Labels are the user's keys, not sbuml's.
			if !snakeKey.MatchString(k) && !strings.HasSuffix(path, ".labels") {
				t.Errorf("sbuml %s: key %s%s is not snake_case", cmd, path, k)
			}
			checkJSON(t, cmd, path+"."+k, e)
		}
	case []any:
		for i, e := range x {
			checkJSON(t, cmd, path+"["+string(rune('0'+i%10))+"]", e)
		}
	}
}

// TestDoctor checks a scrapbook and this host, and creates nothing: not
// in the scrapbook, its HOME (where the accelerator verdict is cached) or
// its TMPDIR.
func TestDoctor(t *testing.T) {
	sb := filepath.Join(t.TempDir(), "sb")
	newCLI(t, sb).ok("init")
	before := listTree(t, sb)
	c := newCLI(t, sb)
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	out := c.run("doctor", "--json")
	var checks []struct {
		Check, Status, Info, Fix string
		OK                       bool
	}
	if err := json.Unmarshal([]byte(out.stdout), &checks); err != nil {
		t.Fatalf("doctor --json: %v\n%s", err, out.stdout)
	}
	seen := map[string]string{}
	for _, ch := range checks {
		seen[ch.Check] = ch.Status
		if ch.Status != "ok" && ch.Fix == "" && ch.Check != "accel" {
			t.Errorf("doctor: %s is %s with no fix: %s", ch.Check, ch.Status, ch.Info)
		}
		if ch.OK != (ch.Status != "fail") {
			t.Errorf("doctor: %s: ok %v but status %s", ch.Check, ch.OK, ch.Status)
		}
	}
	for _, want := range []string{"qemu", "accel", "tmpfs", "dirty-log", "agent", "tools", "scrapbook", "writable", "space", "image"} {
		if seen[want] == "" {
			t.Errorf("doctor did not check %s: %v", want, seen)
		}
	}
	if seen["image"] != "warn" || (out.code != 0) != slices.ContainsFunc(checks, func(c struct {
		Check, Status, Info, Fix string
		OK                       bool
	}) bool {
		return !c.OK
	}) {
		t.Errorf("doctor exit %d with checks %v", out.code, seen)
	}
	if after := listTree(t, sb); !slices.Equal(before, after) {
		t.Errorf("doctor changed the scrapbook: %v -> %v", before, after)
	}
	for _, dir := range []string{c.home, tmp} {
		if got := listTree(t, dir); len(got) != 0 {
			t.Errorf("doctor created %v in %s", got, dir)
		}
	}
}

// listTree lists the paths below dir.
func listTree(t *testing.T, dir string) []string {
	t.Helper()
	var paths []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && p != dir {
			paths = append(paths, p)
		}
		return nil
	})
	return paths
}

// TestMakeInstall installs the command built for the tests into a
// temporary DESTDIR, as make install does after make build.
func TestMakeInstall(t *testing.T) {
	_, err := exec.LookPath("make")
	testenv.Need(t, "make", err)
	dest := t.TempDir()
	cmd := exec.Command("make", "-s", "-C", "../..", "install-files", "DESTDIR="+dest, "PREFIX=/usr",
		"SBUML_BIN="+sbumlBin, "GUEST_BIN="+filepath.Join(filepath.Dir(sbumlBin), "sbuml-guest"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make install-files: %v\n%s", err, out)
	}
	for _, f := range []string{
		"usr/bin/sbuml", "usr/bin/sbuml-guest",
		"usr/share/man/man1/sbuml.1", "usr/share/man/man1/sbuml-checkout.1",
		"usr/share/bash-completion/completions/sbuml", "usr/share/zsh/site-functions/_sbuml",
		"usr/share/fish/vendor_completions.d/sbuml.fish",
		"usr/share/applications/sbuml.desktop", "usr/share/mime/packages/sbuml.xml",
	} {
		if fi, err := os.Stat(filepath.Join(dest, f)); err != nil || fi.Size() == 0 {
			t.Errorf("make install-files did not install %s: %v", f, err)
		}
	}
}
