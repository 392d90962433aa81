package cpio

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// entry is one archive member used by the tests.
type entry struct {
	hdr  Header
	data string
}

// sampleEntries covers every file type the initramfs uses and data and
// name lengths that exercise each padding remainder.
var sampleEntries = []entry{
	{hdr: Header{Name: "bin", Mode: fs.ModeDir | 0o755, ModTime: 1}},
	{hdr: Header{Name: "bin/a", Mode: 0o644, ModTime: 2}, data: "x"},
	{hdr: Header{Name: "bin/ab", Mode: 0o755, UID: 1000, GID: 100, ModTime: 3}, data: "xy"},
	{hdr: Header{Name: "bin/abc", Mode: 0o600}, data: "xyz"},
	{hdr: Header{Name: "bin/abcd", Mode: 0o644}, data: "wxyz"},
	{hdr: Header{Name: "bin/empty", Mode: 0o644}},
	{hdr: Header{Name: "bin/sh", Mode: fs.ModeSymlink | 0o777, Linkname: "busybox"}},
	{hdr: Header{Name: "dev", Mode: fs.ModeDir | 0o755}},
	{hdr: Header{Name: "dev/console", Mode: fs.ModeDevice | fs.ModeCharDevice | 0o600, Devmajor: 5, Devminor: 1}},
	{hdr: Header{Name: "dev/vda", Mode: fs.ModeDevice | 0o660, Devmajor: 254}},
	{hdr: Header{Name: "run", Mode: fs.ModeDir | fs.ModeSticky | 0o777}},
	{hdr: Header{Name: "run/fifo", Mode: fs.ModeNamedPipe | 0o644}},
	{hdr: Header{Name: "big", Mode: 0o644}, data: strings.Repeat("0123456789", 1000)},
}

func writeArchive(t *testing.T, entries []entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := NewWriter(&buf)
	for _, e := range entries {
		hdr := e.hdr
		hdr.Size = int64(len(e.data))
		if hdr.Mode.Type() == fs.ModeSymlink {
			hdr.Size = 0
		}
		if err := w.WriteHeader(&hdr); err != nil {
			t.Fatalf("WriteHeader(%s): %v", hdr.Name, err)
		}
		if _, err := io.WriteString(w, e.data); err != nil {
			t.Fatalf("Write(%s): %v", hdr.Name, err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	return buf.Bytes()
}

func TestRoundTrip(t *testing.T) {
	archive := writeArchive(t, sampleEntries)
	if len(archive)%4 != 0 {
		t.Errorf("archive length %d is not a multiple of 4", len(archive))
	}
	r := NewReader(bytes.NewReader(archive))
	for i, want := range sampleEntries {
		hdr, err := r.Next()
		if err != nil {
			t.Fatalf("Next() for entry %d (%s): %v", i, want.hdr.Name, err)
		}
		data, err := io.ReadAll(r)
		if err != nil {
			t.Fatalf("read %s: %v", hdr.Name, err)
		}
		wantHdr := want.hdr
		wantHdr.Size = int64(len(want.data))
		if wantHdr.Mode.Type() == fs.ModeSymlink {
			wantHdr.Size = int64(len(wantHdr.Linkname))
		}
		wantHdr.Nlink = 1
		if wantHdr.Mode.IsDir() {
			wantHdr.Nlink = 2
		}
		if !reflect.DeepEqual(*hdr, wantHdr) {
			t.Errorf("entry %d:\n got %+v\nwant %+v", i, *hdr, wantHdr)
		}
		if string(data) != want.data {
			t.Errorf("%s: data %q, want %q", hdr.Name, data, want.data)
		}
	}
	if _, err := r.Next(); err != io.EOF {
		t.Errorf("Next() after last entry = %v, want io.EOF", err)
	}
}

func TestDeterministic(t *testing.T) {
	a := writeArchive(t, sampleEntries)
	b := writeArchive(t, sampleEntries)
	if !bytes.Equal(a, b) {
		t.Error("two archives of the same entries differ")
	}
}

// TestGNUCpioList checks the archive against an independent reader, GNU
// cpio (Debian package cpio), which must list every entry with the right
// type and permissions.
func TestGNUCpioList(t *testing.T) {
	cpioBin := lookCpio(t)
	cmd := exec.Command(cpioBin, "-t", "-v", "--quiet", "-H", "newc")
	cmd.Stdin = bytes.NewReader(writeArchive(t, sampleEntries))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cpio -t: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != len(sampleEntries) {
		t.Fatalf("cpio -t listed %d entries, want %d:\n%s", len(lines), len(sampleEntries), out)
	}
	for i, e := range sampleEntries {
		fields := strings.Fields(lines[i])
		if got, want := fields[0], e.hdr.Mode.String(); !sameModeString(got, want) {
			t.Errorf("%s: cpio mode %s, want %s", e.hdr.Name, got, want)
		}
		name := e.hdr.Name
		if e.hdr.Mode.Type() == fs.ModeSymlink {
			name += " -> " + e.hdr.Linkname
		}
		if !strings.HasSuffix(lines[i], " "+name) {
			t.Errorf("cpio line %q does not end in %q", lines[i], name)
		}
	}
}

// sameModeString compares ls-style mode strings from cpio with Go's
// fs.FileMode.String, which spells types and special bits differently.
func sameModeString(gnu, goMode string) bool {
	typ := map[byte]byte{'d': 'd', 'L': 'l', 'D': 'b', 'c': 'c', 'p': 'p', 'S': 's', '-': '-'}
	kind := goMode[0]
	if len(goMode) > 10 { // char devices are "Dc...", sticky dirs "dt..."
		if goMode[:2] == "Dc" {
			kind = 'c'
		}
	}
	if typ[kind] != gnu[0] {
		return false
	}
	perm := goMode[len(goMode)-9:]
	if strings.Contains(goMode[:len(goMode)-9], "t") {
		perm = perm[:8] + "t"
	}
	return perm == gnu[1:]
}

// TestGNUCpioExtract extracts regular files, directories and symlinks with
// GNU cpio and compares them with what was written.
func TestGNUCpioExtract(t *testing.T) {
	cpioBin := lookCpio(t)
	var entries []entry
	for _, e := range sampleEntries {
		switch e.hdr.Mode.Type() {
		case 0, fs.ModeDir, fs.ModeSymlink:
			entries = append(entries, e)
		}
	}
	dir := t.TempDir()
	cmd := exec.Command(cpioBin, "-i", "-d", "--quiet", "--no-absolute-filenames", "-H", "newc")
	cmd.Dir = dir
	cmd.Stdin = bytes.NewReader(writeArchive(t, entries))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cpio -i: %v\n%s", err, out)
	}
	for _, e := range entries {
		path := filepath.Join(dir, e.hdr.Name)
		switch e.hdr.Mode.Type() {
		case 0:
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if string(data) != e.data {
				t.Errorf("%s: extracted %d bytes, want %d", e.hdr.Name, len(data), len(e.data))
			}
		case fs.ModeSymlink:
			target, err := os.Readlink(path)
			if err != nil {
				t.Fatal(err)
			}
			if target != e.hdr.Linkname {
				t.Errorf("%s: link to %q, want %q", e.hdr.Name, target, e.hdr.Linkname)
			}
		case fs.ModeDir:
			fi, err := os.Stat(path)
			if err != nil || !fi.IsDir() {
				t.Errorf("%s: not extracted as a directory (%v)", e.hdr.Name, err)
			}
		}
	}
}

func lookCpio(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("cpio")
	if err != nil {
		t.Fatalf("GNU cpio is needed to cross-check the archive format (apt-get install cpio): %v", err)
	}
	return path
}

func TestWriterErrors(t *testing.T) {
	tests := []struct {
		name string
		run  func(w *Writer) error
		want string
	}{
		{"absolute name", func(w *Writer) error {
			return w.WriteHeader(&Header{Name: "/init", Mode: 0o755})
		}, "invalid entry name"},
		{"empty name", func(w *Writer) error {
			return w.WriteHeader(&Header{Mode: 0o755})
		}, "invalid entry name"},
		{"size on directory", func(w *Writer) error {
			return w.WriteHeader(&Header{Name: "d", Mode: fs.ModeDir, Size: 3})
		}, "size 3"},
		{"symlink without target", func(w *Writer) error {
			return w.WriteHeader(&Header{Name: "l", Mode: fs.ModeSymlink})
		}, "without a target"},
		{"irregular type", func(w *Writer) error {
			return w.WriteHeader(&Header{Name: "x", Mode: fs.ModeIrregular})
		}, "unsupported file type"},
		{"short entry", func(w *Writer) error {
			if err := w.WriteHeader(&Header{Name: "f", Size: 5}); err != nil {
				return err
			}
			if _, err := w.Write([]byte("abc")); err != nil {
				return err
			}
			return w.Close()
		}, "2 bytes of data missing"},
		{"long entry", func(w *Writer) error {
			if err := w.WriteHeader(&Header{Name: "f", Size: 2}); err != nil {
				return err
			}
			_, err := w.Write([]byte("abc"))
			return err
		}, ErrWriteTooLong.Error()},
		{"field overflow", func(w *Writer) error {
			return w.WriteHeader(&Header{Name: "f", ModTime: 1 << 33})
		}, "does not fit in 32 bits"},
		{"header after close", func(w *Writer) error {
			if err := w.Close(); err != nil {
				return err
			}
			return w.WriteHeader(&Header{Name: "f"})
		}, "after close"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.run(NewWriter(io.Discard))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestReaderErrors(t *testing.T) {
	good := writeArchive(t, sampleEntries[:3])
	tests := []struct {
		name    string
		archive []byte
		want    string
	}{
		{"bad magic", append([]byte("070707"), good[6:]...), "bad magic"},
		{"not hex", append(append([]byte(nil), good[:14]...), append([]byte("zzzzzzzz"), good[22:]...)...), "not hex"},
		{"truncated header", good[:50], io.ErrUnexpectedEOF.Error()},
		{"truncated data", good[:len(good)-200], io.ErrUnexpectedEOF.Error()},
		{"empty", nil, io.ErrUnexpectedEOF.Error()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewReader(bytes.NewReader(tt.archive))
			var err error
			for err == nil {
				if _, err = r.Next(); err == nil {
					_, err = io.Copy(io.Discard, r)
				}
			}
			if errors.Is(err, io.EOF) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got error %v, want one containing %q", err, tt.want)
			}
		})
	}
}
