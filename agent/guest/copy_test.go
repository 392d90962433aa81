package guest_test

import (
	"archive/tar"
	"bytes"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// entry is one file of a test archive.
type entry struct {
	name   string
	typ    byte
	mode   int64
	data   []byte
	link   string
	mtime  time.Time
	sticky bool
}

func testEntries() []entry {
	rng := rand.New(rand.NewPCG(1, 2))
	big := make([]byte, 3<<20+17) // several windows, not a multiple of anything
	for i := range big {
		big[i] = byte(rng.Uint32())
	}
	t0 := time.Date(2020, 2, 3, 4, 5, 6, 0, time.UTC)
	return []entry{
		{name: "tree/", typ: tar.TypeDir, mode: 0o750, mtime: t0},
		{name: "tree/big.bin", typ: tar.TypeReg, mode: 0o640, data: big, mtime: t0.Add(time.Hour)},
		{name: "tree/empty", typ: tar.TypeReg, mode: 0o600, mtime: t0.Add(2 * time.Hour)},
		{name: "tree/run.sh", typ: tar.TypeReg, mode: 0o4755, data: []byte("#!/bin/sh\n"), mtime: t0.Add(3 * time.Hour)},
		{name: "tree/sub/", typ: tar.TypeDir, mode: 0o1777, mtime: t0.Add(4 * time.Hour)},
		{name: "tree/sub/note", typ: tar.TypeReg, mode: 0o644, data: []byte("note\n"), mtime: t0.Add(5 * time.Hour)},
		{name: "tree/sub/abs-link", typ: tar.TypeSymlink, link: "/etc/hostname", mtime: t0.Add(6 * time.Hour)},
		{name: "tree/rel-link", typ: tar.TypeSymlink, link: "sub/note", mtime: t0.Add(7 * time.Hour)},
	}
}

func tarOf(t *testing.T, entries []entry) *bytes.Buffer {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: e.mode, Size: int64(len(e.data)), Linkname: e.link, ModTime: e.mtime}
		if e.typ == tar.TypeSymlink {
			h.Mode = 0o777
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write(e.data)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return &b
}

// TestCopyRoundTrip copies a tree in and back out: contents, modes,
// modification times and links must survive both ways.
func TestCopyRoundTrip(t *testing.T) {
	host, _, _, _ := setup(t, nil)
	ctx := testContext(t)
	dir := t.TempDir()
	want := testEntries()
	if err := host.CopyIn(ctx, dir, tarOf(t, want)); err != nil {
		t.Fatal(err)
	}
	for _, e := range want {
		p := filepath.Join(dir, e.name)
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		if !fi.ModTime().Equal(e.mtime) {
			t.Errorf("%s: mtime %v, want %v", e.name, fi.ModTime(), e.mtime)
		}
		switch e.typ {
		case tar.TypeReg:
			if b, _ := os.ReadFile(p); !bytes.Equal(b, e.data) {
				t.Errorf("%s: %d bytes differ from the %d sent", e.name, len(b), len(e.data))
			}
		case tar.TypeSymlink:
			if l, _ := os.Readlink(p); l != e.link {
				t.Errorf("%s: link to %q, want %q", e.name, l, e.link)
			}
		}
		if e.typ != tar.TypeSymlink {
			if got := tarMode(fi); got != e.mode {
				t.Errorf("%s: mode %o, want %o", e.name, got, e.mode)
			}
		}
	}

	var out bytes.Buffer
	if err := host.CopyOut(ctx, filepath.Join(dir, "tree"), &out); err != nil {
		t.Fatal(err)
	}
	got := map[string]*tar.Header{}
	data := map[string][]byte{}
	tr := tar.NewReader(&out)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got[h.Name] = h
		data[h.Name], _ = io.ReadAll(tr)
	}
	for _, e := range want {
		h := got[e.name]
		if h == nil {
			t.Errorf("%s missing from the copy out (have %v)", e.name, keys(got))
			continue
		}
		if h.Typeflag != e.typ || !h.ModTime.Equal(e.mtime) || h.Linkname != e.link || !bytes.Equal(data[e.name], e.data) {
			t.Errorf("%s out: type %c mtime %v link %q %d bytes, want %c %v %q %d", e.name, h.Typeflag, h.ModTime, h.Linkname, len(data[e.name]), e.typ, e.mtime, e.link, len(e.data))
		}
		if e.typ != tar.TypeSymlink && h.Mode != e.mode {
			t.Errorf("%s out: mode %o, want %o", e.name, h.Mode, e.mode)
		}
	}
	if len(got) != len(want) {
		t.Errorf("copy out has %d entries, want %d: %v", len(got), len(want), keys(got))
	}

	// A single file is archived under its base name.
	out.Reset()
	if err := host.CopyOut(ctx, filepath.Join(dir, "tree/sub/note"), &out); err != nil {
		t.Fatal(err)
	}
	if h, err := tar.NewReader(&out).Next(); err != nil || h.Name != "note" {
		t.Errorf("single file: %v %v", h, err)
	}
}

func tarMode(fi os.FileInfo) int64 {
	h, _ := tar.FileInfoHeader(fi, "")
	return h.Mode
}

func keys(m map[string]*tar.Header) []string {
	var k []string
	for n := range m {
		k = append(k, n)
	}
	return k
}

// TestCopyInRefuses: entries that would land outside the directory are
// refused, directly or through a link, and nothing is written outside.
func TestCopyInRefuses(t *testing.T) {
	host, _, _, _ := setup(t, nil)
	ctx := testContext(t)
	outside := t.TempDir()
	tests := []struct {
		name    string
		entries []entry
		want    string
	}{
		{"dot-dot", []entry{{name: "../escaped", typ: tar.TypeReg}}, "would land outside"},
		{"nested dot-dot", []entry{{name: "a/../../escaped", typ: tar.TypeReg}}, "would land outside"},
		{"absolute", []entry{{name: "/escaped", typ: tar.TypeReg}}, "would land outside"},
		{"through a link", []entry{
			{name: "link", typ: tar.TypeSymlink, link: outside},
			{name: "link/escaped", typ: tar.TypeReg, data: []byte("x")},
		}, "escapes"},
		{"hard link out", []entry{{name: "hard", typ: tar.TypeLink, link: "../escaped"}}, "would land outside"},
		{"device", []entry{{name: "dev", typ: tar.TypeChar}}, "not supported"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "in")
			os.Mkdir(dir, 0o755)
			err := host.CopyIn(ctx, dir, tarOf(t, tt.entries))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("CopyIn: %v, want an error saying %q", err, tt.want)
			}
			for _, p := range []string{filepath.Join(filepath.Dir(dir), "escaped"), filepath.Join(outside, "escaped"), "/escaped"} {
				if _, err := os.Lstat(p); err == nil {
					t.Errorf("%s was written", p)
				}
			}
		})
	}
}

func TestCopyErrors(t *testing.T) {
	host, _, _, _ := setup(t, nil)
	ctx := testContext(t)
	missing := filepath.Join(t.TempDir(), "missing")
	if err := host.CopyIn(ctx, missing, tarOf(t, testEntries())); err == nil || !strings.Contains(err.Error(), "copy into "+missing) || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("CopyIn to a missing directory: %v", err)
	}
	if err := host.CopyOut(ctx, missing, io.Discard); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("CopyOut of a missing path: %v", err)
	}
	if err := host.CopyIn(ctx, t.TempDir(), strings.NewReader("not a tar stream at all, but long enough to fill a tar header block......................................................................................................................................................................................................................................................................................................................................................................................................................................................")); err == nil || !strings.Contains(err.Error(), "read the archive") {
		t.Errorf("CopyIn of garbage: %v", err)
	}
	// The connection is fine afterwards.
	if _, err := host.Ping(ctx); err != nil {
		t.Error(err)
	}
}
