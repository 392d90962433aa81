package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/sbuml/sbuml"
	"github.com/sbuml/sbuml/objects"
)

// sbumlBin is the sbuml command built from this package by TestMain.
var sbumlBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "sbuml-cli-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	sbumlBin = filepath.Join(dir, "sbuml")
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	if out, err := exec.Command(goTool, "build", "-o", sbumlBin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	// The images the command builds carry the agent it finds beside it.
	agent := exec.Command(goTool, "build", "-ldflags", "-s -w", "-o", filepath.Join(dir, "sbuml-guest"), "../sbuml-guest")
	agent.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := agent.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build sbuml-guest: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// cli runs the sbuml command with a private HOME, so that nothing touches
// the real ~/.sbuml, and SBUML_DIR set to dir (unset if dir is "").
type cli struct {
	t    *testing.T
	home string
	dir  string
}

func newCLI(t *testing.T, dir string) *cli {
	return &cli{t: t, home: t.TempDir(), dir: dir}
}

// output is what one run of the command did.
type output struct {
	stdout, stderr string
	code           int
}

func (c *cli) run(args ...string) output {
	c.t.Helper()
	cmd := exec.Command(sbumlBin, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "HOME=") && !strings.HasPrefix(kv, "SBUML_DIR=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "HOME="+c.home)
	if c.dir != "" {
		cmd.Env = append(cmd.Env, "SBUML_DIR="+c.dir)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	out := output{stdout: stdout.String(), stderr: stderr.String()}
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		out.code = exit.ExitCode()
	} else if err != nil {
		c.t.Fatalf("sbuml %s: %v", strings.Join(args, " "), err)
	}
	return out
}

// ok runs the command and fails the test unless it succeeds quietly.
func (c *cli) ok(args ...string) string {
	c.t.Helper()
	out := c.run(args...)
	if out.code != 0 || out.stderr != "" {
		c.t.Fatalf("sbuml %s: exit %d, stderr %q", strings.Join(args, " "), out.code, out.stderr)
	}
	return out.stdout
}

// json runs the command and decodes its standard output into v.
func (c *cli) json(v any, args ...string) {
	c.t.Helper()
	out := c.ok(args...)
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		c.t.Fatalf("sbuml %s: %v in\n%s", strings.Join(args, " "), err, out)
	}
}

// keys runs the command and returns the keys of the JSON object it
// prints, or of the first element of the array it prints.
func (c *cli) keys(args ...string) []string {
	c.t.Helper()
	var raw any
	if err := json.Unmarshal([]byte(c.ok(args...)), &raw); err != nil {
		c.t.Fatalf("sbuml %s: %v", strings.Join(args, " "), err)
	}
	if a, ok := raw.([]any); ok && len(a) > 0 {
		raw = a[0]
	}
	m, ok := raw.(map[string]any)
	if !ok {
		c.t.Fatalf("sbuml %s: printed %T, want an object", strings.Join(args, " "), raw)
	}
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// requireKeys fails the test unless got holds every key of want.
func requireKeys(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	for _, k := range want {
		if !slices.Contains(got, k) {
			t.Errorf("%s: JSON has keys %v, missing %q", what, got, k)
		}
	}
}

func writeTestFile(t *testing.T, path, content string, mode fs.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

// requireSameFiles fails the test unless dir got holds the regular files,
// directories and symlinks of want, with the same contents and modes.
func requireSameFiles(t *testing.T, want, got string) {
	t.Helper()
	list := func(root string) map[string]string {
		m := map[string]string{}
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(root, path)
			info, err := d.Info()
			if err != nil {
				return err
			}
			desc := info.Mode().String()
			switch {
			case d.Type()&fs.ModeSymlink != 0:
				target, _ := os.Readlink(path)
				desc += " -> " + target
			case d.Type().IsRegular():
				b, _ := os.ReadFile(path)
				desc += " " + string(b)
			}
			m[rel] = desc
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		delete(m, ".")
		return m
	}
	w, g := list(want), list(got)
	for name, d := range w {
		if g[name] != d {
			t.Errorf("%s: exported as %.60q, want %.60q", name, g[name], d)
		}
	}
	for name := range g {
		if _, ok := w[name]; !ok {
			t.Errorf("%s: exported but not in the original", name)
		}
	}
}

var fullID = regexp.MustCompile(`^[0-9a-f]{64}$`)

// TestStoreCommands runs the scrapbook commands one after another on
// one scrapbook: init, import, log, show, du, export, cat-object, fsck.
//
// It is long because it is one scenario: each step starts from what the
// steps before it left.
func TestStoreCommands(t *testing.T) {
	sb := filepath.Join(t.TempDir(), "sb")
	c := newCLI(t, "")

	out := c.ok("init", sb)
	if out != "Initialized empty scrapbook in "+sb+"\n" {
		t.Errorf("init printed %q", out)
	}
	c.dir = sb // from here on through $SBUML_DIR
	if out := c.ok("log", "--json"); out != "[]\n" {
		t.Errorf("log --json of a new scrapbook printed %q, want []", out)
	}
	if out := c.ok("log"); out != "" {
		t.Errorf("log of a new scrapbook printed %q, want nothing", out)
	}

	src := t.TempDir()
	writeTestFile(t, filepath.Join(src, "hello.txt"), "hello\n", 0o644)
	writeTestFile(t, filepath.Join(src, "bin", "run"), "#!/bin/sh\n", 0o755)
	writeTestFile(t, filepath.Join(src, "empty"), "", 0o600)
	if err := os.Symlink("hello.txt", filepath.Join(src, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(src, "empty-dir"), 0o700); err != nil {
		t.Fatal(err)
	}

	out = c.ok("import", "-m", "first", src)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	first, _, _ := strings.Cut(lines[0], " ")
	if len(lines) != 2 || !fullID.MatchString(first) || !strings.HasSuffix(lines[0], " main") || !strings.Contains(lines[1], "logical") {
		t.Fatalf("import printed:\n%s\nwant the snapshot ID and branch, then sizes", out)
	}

	writeTestFile(t, filepath.Join(src, "hello.txt"), "hello again\n", 0o644)
	requireKeys(t, "import --json", c.keys("import", "--json", "-m", "second", src),
		"id", "branch", "parent", "logical_bytes", "stats", "duration_ns")
	var second sbuml.Result
	c.json(&second, "import", "--json", "--branch", "other", "-m", "on other", src)
	if second.Branch != "refs/heads/other" || !second.Parent.IsZero() || second.LogicalBytes != uint64(len("hello again\n#!/bin/sh\nhello.txt")) {
		t.Errorf("import --json -b other: %+v", second)
	}

	var log []sbuml.LogEntry
	c.json(&log, "log", "--json")
	if len(log) != 2 || log[0].Message != "second" || log[1].Message != "first" || log[1].ID.String() != first ||
		!slices.Equal(log[0].Parents, []objects.ID{log[1].ID}) || len(log[1].Parents) != 0 ||
		!slices.Equal(log[0].Refs, []string{"refs/heads/main"}) || log[0].Time.Before(log[1].Time) || log[0].Time.IsZero() {
		t.Errorf("log --json: %+v", log)
	}
	requireKeys(t, "log --json", c.keys("log", "--json"),
		"id", "parents", "time", "author", "host", "message", "refs", "logical_bytes", "added_bytes")
	var all []sbuml.LogEntry
	c.json(&all, "log", "--all", "--json")
	if len(all) != 3 || all[0].Message != "on other" {
		t.Errorf("log --all --json lists %d snapshots, newest %q; want 3, newest \"on other\"", len(all), all[0].Message)
	}
	var limited []sbuml.LogEntry
	c.json(&limited, "log", "-n", "1", "--json", "main")
	if len(limited) != 1 || limited[0].ID != log[0].ID {
		t.Errorf("log -n 1 main: %+v", limited)
	}
	text := strings.Split(strings.TrimSuffix(c.ok("log"), "\n"), "\n")
	if len(text) != 2 || !strings.HasPrefix(text[0], log[0].ID.Short()+" ") || !strings.Contains(text[0], "(main)") || !strings.Contains(text[0], "second") {
		t.Errorf("log printed %q", text)
	}
	graph := strings.Split(strings.TrimSuffix(c.ok("log", "--graph", "--all"), "\n"), "\n")
	// other's one snapshot is a history of its own: a blank graph line
	// keeps it from looking like main's child.
	if len(graph) != 4 || !strings.HasPrefix(graph[0], "* ") || graph[1] != "" || !strings.HasPrefix(graph[2], "* ") {
		t.Errorf("log --graph --all printed %q", graph)
	}

	var show sbuml.ShowResult
	c.json(&show, "show", "--json", "main")
	if show.ID != log[0].ID || show.Message != "second" || show.Tree.IsZero() {
		t.Errorf("show --json main: %s %q tree %s", show.ID.Short(), show.Message, show.Tree.Short())
	}
	var paths []string
	for _, f := range show.Files {
		paths = append(paths, f.Kind+" "+f.Path)
	}
	wantPaths := []string{"dir bin", "file bin/run", "file empty", "dir empty-dir", "file hello.txt", "symlink link"}
	if !slices.Equal(paths, wantPaths) {
		t.Errorf("show --json lists %q, want %q", paths, wantPaths)
	}
	for _, f := range show.Files {
		if f.Path == "hello.txt" && (f.Size != 12 || f.Mode != 0o644 || f.Chunks != 1 || f.Chunking == "") {
			t.Errorf("show --json: hello.txt is %+v", f)
		}
	}
	showText := c.ok("show", "main~1")
	for _, want := range []string{"snapshot " + first + "\n", "    first\n", "hello.txt"} {
		if !strings.Contains(showText, want) {
			t.Errorf("show main~1 printed:\n%s\nwant it to contain %q", showText, want)
		}
	}

	var du sbuml.DuReport
	c.json(&du, "du", "--json")
	if len(du.Snapshots) != 3 || du.Objects == 0 || du.StoredBytes == 0 || du.LogicalBytes == 0 || du.DedupRatio < 1 {
		t.Errorf("du --json: %+v", du)
	}
	requireKeys(t, "du --json", c.keys("du", "--json"), "snapshots", "objects", "stored_bytes", "logical_bytes",
		"unique_chunk_bytes", "dedup_ratio", "compression_ratio")
	duText := c.ok("du")
	if !strings.Contains(duText, "3 snapshots") || !strings.Contains(duText, "dedup ") {
		t.Errorf("du printed:\n%s", duText)
	}

	exported := filepath.Join(t.TempDir(), "out")
	if out := c.ok("export", "main", exported); out != "exported "+log[0].ID.Short()+" to "+exported+"\n" {
		t.Errorf("export printed %q", out)
	}
	requireSameFiles(t, src, exported)
	old := filepath.Join(t.TempDir(), "old")
	c.ok("expanddelta", first[:10], old)
	if b, _ := os.ReadFile(filepath.Join(old, "hello.txt")); string(b) != "hello\n" {
		t.Errorf("export of the first snapshot: hello.txt holds %q", b)
	}

	// cat-object: a snapshot by prefix, as text and JSON; a symlink's
	// chunk as raw bytes; any object's canonical encoding with --raw.
	catText := c.ok("cat-object", first[:12])
	if !strings.HasPrefix(catText, "snapshot "+first+"\n") {
		t.Errorf("cat-object %s printed:\n%s", first[:12], catText)
	}
	var cat struct {
		ID     objects.ID      `json:"id"`
		Kind   string          `json:"kind"`
		Object json.RawMessage `json:"object"`
	}
	if err := json.Unmarshal([]byte(c.ok("cat-object", "--json", first)), &cat); err != nil {
		t.Fatal(err)
	}
	if cat.ID.String() != first || cat.Kind != "snapshot" || len(cat.Object) == 0 {
		t.Errorf("cat-object --json: %+v", cat)
	}
	var link objects.ID
	for _, f := range show.Files {
		if f.Path == "link" {
			link = f.ID
		}
	}
	if out := c.ok("cat-object", link.String()); out != "hello.txt" {
		t.Errorf("cat-object of the symlink's chunk printed %q, want its target", out)
	}
	if raw := c.ok("cat-object", "--raw", show.Tree.String()); objects.Sum([]byte(raw)) != show.Tree {
		t.Errorf("cat-object --raw printed %d bytes that do not hash to the tree's ID", len(raw))
	}

	if out := c.ok("fsck"); !strings.HasSuffix(out, " 0 problems\n") {
		t.Errorf("fsck printed %q", out)
	}

	// gc: nothing to remove while every snapshot is on a branch.
	var gc sbuml.GcReport
	c.json(&gc, "gc", "--dry-run", "--json")
	if !gc.DryRun || gc.Removed != 0 || gc.Kept == 0 || gc.Roots == 0 {
		t.Errorf("gc --dry-run --json: %+v", gc)
	}
	if out := c.ok("gc"); !strings.HasPrefix(out, "gc: kept ") || !strings.Contains(out, "removed 0 ") {
		t.Errorf("gc printed %q", out)
	}
	if out := c.ok("fsck"); !strings.HasSuffix(out, " 0 problems\n") {
		t.Errorf("fsck after gc printed %q", out)
	}
}

// TestOnlyInitAndCloneCreate runs every command that writes on a path
// that holds no scrapbook: each fails with one line saying to run sbuml
// init (doctor reports it as a failed check) and creates nothing.
func TestOnlyInitAndCloneCreate(t *testing.T) {
	src := t.TempDir()
	writeTestFile(t, filepath.Join(src, "f"), "data", 0o644)
	for _, args := range [][]string{
		{"import", src},
		{"boot", "m1"},
		{"open", "http://127.0.0.1:9/book/branches/main.sbuml"},
		{"checkout", "http://127.0.0.1:9/book/#main", "m1"},
		{"fetch", "http://127.0.0.1:9/book/#main"},
		{"remote", "add", "origin", "http://127.0.0.1:9/book/"},
		{"pull", "origin"},
		{"image", "build"},
		{"commit", "m1"},
		{"branch", "x"},
		{"gc"},
	} {
		sb := filepath.Join(t.TempDir(), "mistyped")
		out := newCLI(t, sb).run(args...)
		if out.code != 1 || !strings.Contains(out.stderr, "not a scrapbook") || !strings.Contains(out.stderr, "sbuml init") || strings.Count(out.stderr, "\n") != 1 {
			t.Errorf("sbuml %s on a path without a scrapbook: exit %d, stderr %q; want one line saying to run sbuml init", strings.Join(args, " "), out.code, out.stderr)
		}
		if _, err := os.Stat(sb); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("sbuml %s created %s", strings.Join(args, " "), sb)
		}
	}
	sb := filepath.Join(t.TempDir(), "mistyped")
	out := newCLI(t, sb).run("doctor")
	if out.code != 1 || !strings.Contains(out.stdout, "fail scrapbook") || !strings.Contains(out.stdout, "sbuml init "+sb) {
		t.Errorf("doctor without a scrapbook: exit %d, stdout %q; want a failed scrapbook check saying to run sbuml init", out.code, out.stdout)
	}
	if _, err := os.Stat(sb); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("doctor created %s", sb)
	}
	newCLI(t, sb).ok("init")
	newCLI(t, sb).ok("import", src)
}

// TestErrors checks that each mistake gives exit code 1 and one line on
// standard error that starts with "sbuml: " and says what is wrong.
func TestErrors(t *testing.T) {
	sb := filepath.Join(t.TempDir(), "sb")
	src := t.TempDir()
	writeTestFile(t, filepath.Join(src, "f"), "data", 0o644)
	setup := newCLI(t, sb)
	setup.ok("init")
	setup.ok("import", src)

	notScrapbook := t.TempDir()
	badConfig := t.TempDir()
	writeTestFile(t, filepath.Join(badConfig, "config"), "{not json", 0o644)
	nonEmpty := t.TempDir()
	writeTestFile(t, filepath.Join(nonEmpty, "keep"), "mine", 0o644)
	missingOut := filepath.Join(t.TempDir(), "never")

	tests := []struct {
		name  string
		dir   string // $SBUML_DIR
		args  []string
		parts []string
		code  int // the exit status: 2 for a usage error, else 1
	}{
		{"missing scrapbook", "", []string{"--scrapbook", "/nonexistent/sb", "log"}, []string{"/nonexistent/sb", "not a scrapbook", "sbuml init"}, 1},
		{"directory without scrapbook", notScrapbook, []string{"show", "main"}, []string{notScrapbook, "not a scrapbook"}, 1},
		{"bad config", badConfig, []string{"du"}, []string{badConfig, "config"}, 1},
		{"scrapbook exists", sb, []string{"init"}, []string{sb, "already exists"}, 1},
		{"unknown revision", sb, []string{"show", "nosuch"}, []string{`unknown revision "nosuch"`}, 1},
		{"unknown revision in log", sb, []string{"log", "nosuch"}, []string{`unknown revision "nosuch"`}, 1},
		{"too deep", sb, []string{"log", "main~5"}, []string{"main~5", "no parent"}, 1},
		{"bad revision", sb, []string{"show", "a..b"}, []string{`bad revision "a..b"`}, 1},
		{"export unknown revision", sb, []string{"export", "nosuch", missingOut}, []string{`unknown revision "nosuch"`}, 1},
		{"export into non-empty dir", sb, []string{"export", "main", nonEmpty}, []string{nonEmpty, "not empty"}, 1},
		{"import missing dir", sb, []string{"import", "/nonexistent/src"}, []string{"/nonexistent/src", "no such file"}, 1},
		{"import a file", sb, []string{"import", filepath.Join(src, "f")}, []string{filepath.Join(src, "f"), "not a directory"}, 1},
		{"import onto a bad branch", sb, []string{"import", "-b", "a..b", src}, []string{`"a..b"`}, 1},
		{"cat-object unknown", sb, []string{"cat-object", "0123456789abcdef"}, []string{"0123456789abcdef"}, 1},
		// Usage errors exit 2 and say where the help is.
		{"missing argument", sb, []string{"show"}, []string{"accepts 1 arg(s), received 0", "see 'sbuml show --help'"}, 2},
		{"unknown command", sb, []string{"frobnicate"}, []string{`unknown command "frobnicate"`, "see 'sbuml --help'"}, 2},
		{"unknown flag", sb, []string{"log", "--bogus"}, []string{"unknown flag: --bogus", "see 'sbuml log --help'"}, 2},
		{"flags that exclude each other", sb, []string{"cat-object", "--raw", "--json", "0123456789abcdef"}, []string{"--raw and --json"}, 2},
		{"halt nothing", sb, []string{"halt"}, []string{"name machines or give --all"}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := newCLI(t, tt.dir).run(tt.args...)
			if out.code != tt.code {
				t.Errorf("exit code %d, want %d", out.code, tt.code)
			}
			if out.stdout != "" {
				t.Errorf("stdout %q, want nothing", out.stdout)
			}
			if !strings.HasPrefix(out.stderr, "sbuml: ") || strings.Count(out.stderr, "\n") != 1 || !strings.HasSuffix(out.stderr, "\n") {
				t.Errorf("stderr %q, want one line starting with \"sbuml: \"", out.stderr)
			}
			for _, p := range tt.parts {
				if !strings.Contains(out.stderr, p) {
					t.Errorf("stderr %q does not say %q", out.stderr, p)
				}
			}
		})
	}
	if _, err := os.Stat(missingOut); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a failed export left %s behind", missingOut)
	}
	if b, _ := os.ReadFile(filepath.Join(nonEmpty, "keep")); string(b) != "mine" {
		t.Error("a refused export changed the directory")
	}
	if _, err := os.Stat("/nonexistent/sb"); !errors.Is(err, fs.ErrNotExist) {
		t.Error("a read command created the scrapbook it was pointed at")
	}
	// Nothing above changed the scrapbook.
	if out := setup.ok("log"); strings.Count(out, "\n") != 1 {
		t.Errorf("log printed %q, want the one snapshot", out)
	}
}
