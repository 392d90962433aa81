package guest

import (
	"os"
	"path/filepath"
	"testing"
)

func TestSectorsWritten(t *testing.T) {
	dir := t.TempDir()
	diskstats := filepath.Join(dir, "diskstats")
	os.WriteFile(diskstats, []byte(`
 253       0 vda 1591 0 96758 611 310 87 10320 300 0 880 911 0 0 0 0
 253       1 vda1 1500 0 90000 600 300 87 10000 290 0 870 890 0 0 0 0
 253      16 vdb 10 0 80 1 4 0 32 1 0 2 2 0 0 0 0
   7       0 loop0 5 0 10 0 7 0 999 0 0 0 0 0 0 0 0
`), 0o644)
	for _, dev := range []string{"vda", "vdb", "loop0"} {
		os.MkdirAll(filepath.Join(dir, "block", dev), 0o755)
	}
	for _, dev := range []string{"vda", "vdb"} { // loop0 has no device
		os.Symlink("../../devices/x", filepath.Join(dir, "block", dev, "device"))
		os.MkdirAll(filepath.Join(dir, "devices", "x"), 0o755)
	}
	n, err := sectorsWritten(diskstats, filepath.Join(dir, "block"))
	if err != nil || n != 10320+32 {
		t.Errorf("sectorsWritten = %d, %v; want %d", n, err, 10320+32)
	}
}

func TestSelfUserTicks(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		stat string
		want uint64
		ok   bool
	}{
		{"42 (sbuml-guest) S 1 42 42 0 -1 4194560 900 0 0 0 17 5 0 0 20 0 6 0", 17, true},
		{"42 (a) b (c)) R 1 42 42 0 -1 4194560 900 0 0 0 23 5 0 0 20 0 6 0", 23, true},
		{"42 (short) S 1 42", 0, false},
		{"no name", 0, false},
	} {
		p := filepath.Join(dir, "stat")
		os.WriteFile(p, []byte(tc.stat), 0o644)
		got, err := selfUserTicks(p)
		if got != tc.want || (err == nil) != tc.ok {
			t.Errorf("selfUserTicks(%q) = %d, %v; want %d (ok %v)", tc.stat, got, err, tc.want, tc.ok)
		}
	}
	if _, err := selfUserTicks("/proc/self/stat"); err != nil {
		t.Errorf("this process: %v", err)
	}
}

func TestEscape(t *testing.T) {
	for _, s := range []string{"", "plain", "a\nb", `back\slash`, `\n literally`, "\\\n\\"} {
		if got := unescape(escape(s)); got != s {
			t.Errorf("unescape(escape(%q)) = %q", s, got)
		}
	}
}
