package objects_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/go-git/go-billy/v5"
	"github.com/go-git/go-billy/v5/memfs"
	"github.com/go-git/go-billy/v5/osfs"

	"github.com/sbuml/sbuml/internal/testenv"
	"github.com/sbuml/sbuml/objects"
	"github.com/sbuml/sbuml/objects/storetest"
)

// fileSystems are the file systems stores run on: memory (tests, and
// what a store without a host directory gets), a host directory through
// osfs with its default (chroot) and bound options, and tmpfs, where
// machines keep their RAM and where fsync is a no-op.
var fileSystems = []struct {
	name string
	// open returns a file system and the host directory behind it, ""
	// for memfs.
	open func(t *testing.T) (billy.Filesystem, string)
}{
	{"memfs", func(t *testing.T) (billy.Filesystem, string) { return memfs.New(), "" }},
	{"osfs", func(t *testing.T) (billy.Filesystem, string) {
		dir := t.TempDir()
		return osfs.New(dir), dir
	}},
	{"osfs-bound", func(t *testing.T) (billy.Filesystem, string) {
		dir := t.TempDir()
		return osfs.New(dir, osfs.WithBoundOS()), dir
	}},
	{"tmpfs", func(t *testing.T) (billy.Filesystem, string) {
		dir, err := os.MkdirTemp("/dev/shm", "sbuml-storetest-")
		testenv.Need(t, "tmpfs on /dev/shm", err)
		t.Cleanup(func() { os.RemoveAll(dir) })
		return osfs.New(dir), dir
	}},
}

// hostObjects is the objects directory on the host, "" for memfs.
func hostObjects(host string) string {
	if host == "" {
		return ""
	}
	return filepath.Join(host, "objects")
}

// TestStoreConformance runs the store suite on every store over every
// file system it runs on.
func TestStoreConformance(t *testing.T) {
	stores := []struct {
		name string
		open func(fs billy.Filesystem, host string) objects.Store
	}{
		{"loose", func(fs billy.Filesystem, host string) objects.Store {
			return objects.NewLoose(fs, "objects", hostObjects(host))
		}},
		{"packed", func(fs billy.Filesystem, host string) objects.Store {
			return objects.NewPacked(fs, "objects", hostObjects(host))
		}},
		// The layout of a published directory: packs beside the loose
		// objects, not under them.
		{"packed-published", func(fs billy.Filesystem, host string) objects.Store {
			hostPacks := ""
			if host != "" {
				hostPacks = filepath.Join(host, "packs")
			}
			return objects.NewPackedIn(fs, "packs", hostPacks, "objects", hostObjects(host))
		}},
	}
	for _, st := range stores {
		for _, fsys := range fileSystems {
			t.Run(st.name+"/"+fsys.name, func(t *testing.T) {
				storetest.Run(t, func(t *testing.T) (objects.Store, func() objects.Store) {
					fs, host := fsys.open(t)
					if err := fs.MkdirAll("objects", 0o755); err != nil {
						t.Fatal(err)
					}
					return st.open(fs, host), func() objects.Store { return st.open(fs, host) }
				})
			})
		}
	}
}
