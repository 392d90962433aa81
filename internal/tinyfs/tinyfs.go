// Package tinyfs gives tests a small file system of their own to fill up,
// so that they can run out of space for real: a tmpfs mounted on a
// temporary directory. Mounting needs root; tests that are not root skip.
package tinyfs

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"
)

// Mount mounts a tmpfs of size bytes on a new temporary directory and
// returns it; it is unmounted when t ends. t is skipped unless the test
// runs as root and the mount succeeds.
func Mount(t testing.TB, size int64) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a small tmpfs needs root")
	}
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size="+strconv.FormatInt(size, 10)); err != nil {
		t.Skipf("mount a tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

// Free returns the bytes available on the file system holding dir.
func Free(t testing.TB, dir string) int64 {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bavail) * st.Bsize
}

// Fill writes a file into dir that leaves room bytes free on its file
// system (rounded to its pages), and returns a function that removes it.
func Fill(t testing.TB, dir string, room int64) (remove func()) {
	t.Helper()
	free := Free(t, dir)
	if room > free {
		t.Fatalf("%d bytes free on %s, cannot leave %d", free, dir, room)
	}
	name := filepath.Join(dir, "tinyfs-filler")
	if err := os.WriteFile(name, make([]byte, free-room), 0o644); err != nil {
		t.Fatal(err)
	}
	return func() {
		if err := os.Remove(name); err != nil {
			t.Fatal(err)
		}
	}
}
