package tarball

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// tree makes a small directory: a file, a subdirectory, a symbolic link.
func tree(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "src")
	os.MkdirAll(filepath.Join(dir, "sub"), 0o750)
	os.WriteFile(filepath.Join(dir, "sub", "f"), []byte("hello\n"), 0o640)
	os.Symlink("sub/f", filepath.Join(dir, "link"))
	return dir
}

func pack(t *testing.T, p, top string) *bytes.Buffer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if _, err := Write(tw, p, top); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return &buf
}

func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name, top string
		rename    Rename
		want      string // a file to find under the destination
	}{
		{"under its name", "src", nil, "src/sub/f"},
		{"contents", "", nil, "sub/f"},
		{"renamed", "src", func(n string) (string, bool) { return "copy" + strings.TrimPrefix(n, "src"), true }, "copy/sub/f"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst := t.TempDir()
			if err := Extract(tar.NewReader(pack(t, tree(t), tt.top)), dst, tt.rename); err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(filepath.Join(dst, tt.want))
			if err != nil || string(b) != "hello\n" {
				t.Fatalf("%s: %q, %v", tt.want, b, err)
			}
			fi, _ := os.Stat(filepath.Join(dst, tt.want))
			if fi.Mode().Perm() != 0o640 {
				t.Errorf("mode %v, want 0640", fi.Mode().Perm())
			}
			link := filepath.Join(dst, filepath.Dir(filepath.Dir(tt.want)), "link")
			if target, err := os.Readlink(link); err != nil || target != "sub/f" {
				t.Errorf("link: %q, %v", target, err)
			}
		})
	}
}

// hostile builds a stream of the given entries.
func hostile(t *testing.T, entries ...*tar.Header) *tar.Reader {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range entries {
		if h.Typeflag == tar.TypeReg {
			h.Size = 1
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			tw.Write([]byte("x"))
		}
	}
	tw.Close()
	return tar.NewReader(&buf)
}

func TestExtractStaysInside(t *testing.T) {
	outside := t.TempDir()
	tests := []struct {
		name    string
		entries []*tar.Header
		rename  Rename
	}{
		{"dot-dot", []*tar.Header{{Name: "../escaped", Typeflag: tar.TypeReg, Mode: 0o644}}, nil},
		{"absolute", []*tar.Header{{Name: filepath.Join(outside, "escaped"), Typeflag: tar.TypeReg, Mode: 0o644}}, nil},
		{"through a link", []*tar.Header{
			{Name: "l", Typeflag: tar.TypeSymlink, Linkname: outside},
			{Name: "l/escaped", Typeflag: tar.TypeReg, Mode: 0o644},
		}, nil},
		{"hard link out", []*tar.Header{{Name: "h", Typeflag: tar.TypeLink, Linkname: "../../etc/passwd"}}, nil},
		{"not asked for", []*tar.Header{{Name: "other/f", Typeflag: tar.TypeReg, Mode: 0o644}},
			func(n string) (string, bool) { return n, strings.HasPrefix(n, "top") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := Extract(hostile(t, tt.entries...), t.TempDir(), tt.rename); err == nil {
				t.Error("extracted")
			}
			if _, err := os.Stat(filepath.Join(outside, "escaped")); err == nil {
				t.Fatal("a file was written outside the directory")
			}
		})
	}
}
