package image

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

func TestFindMirror(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string // relative to the apt directory
		want  string
	}{
		{"none", nil, ""},
		{"one-line", map[string]string{
			"sources.list": "# comment\ndeb http://mirror.example/debian/ bookworm main\n",
		}, "http://mirror.example/debian"},
		{"one-line with options, source and other suites first", map[string]string{
			"sources.list": "deb-src http://src.example/debian bookworm main\n" +
				"deb [arch=amd64 signed-by=/k.gpg] https://sec.example/debian-security bookworm-security main\n" +
				"deb [arch=amd64 signed-by=/k.gpg] https://m.example/debian bookworm main contrib # trailing\n",
		}, "https://m.example/debian"},
		{"deb822", map[string]string{
			"sources.list.d/debian.sources": "Types: deb\nURIs: http://deb.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\n" +
				"Types: deb\nURIs: http://deb.example/debian-security\nSuites: bookworm-security\n",
		}, "http://deb.example/debian"},
		{"deb822 disabled and continuation lines", map[string]string{
			"sources.list.d/a.sources": "Enabled: no\nTypes: deb\nURIs: http://off.example/debian\nSuites: bookworm\n\n" +
				"Types: deb-src deb\nURIs:\n http://on.example/debian\nSuites: bookworm\n",
		}, "http://on.example/debian"},
		{"not http", map[string]string{
			"sources.list": "deb file:/srv/debian bookworm main\ndeb cdrom:[x]/ bookworm main\n",
		}, ""},
		{"other suite only", map[string]string{
			"sources.list.d/t.list": "deb http://deb.example/debian trixie main\n",
		}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, data := range tt.files {
				p := filepath.Join(dir, name)
				os.MkdirAll(filepath.Dir(p), 0o755)
				if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if got := findMirror(dir, "bookworm"); got != tt.want {
				t.Errorf("findMirror = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestDebootstrapError(t *testing.T) {
	tests := []struct{ out, want string }{
		{"I: Retrieving InRelease\nE: Failed getting release file http://x/dists/bookworm/InRelease\n", "Failed getting release file http://x/dists/bookworm/InRelease"},
		{"I: x\nW: Failure trying to run: chroot /r dpkg --configure -a\nW: See /r/debootstrap/debootstrap.log for details\n", "See /r/debootstrap/debootstrap.log for details"},
		{"I: only information\n", ""},
	}
	for _, tt := range tests {
		if got := debootstrapError(tt.out); got != tt.want {
			t.Errorf("debootstrapError(%q) = %q, want %q", tt.out, got, tt.want)
		}
	}
}

func TestUnescapeMountinfo(t *testing.T) {
	tests := map[string]string{
		`/plain`:                 "/plain",
		`/with\040space/proc`:    "/with space/proc",
		`/tab\011and\134back`:    "/tab\tand\\back",
		`/not\04`:                `/not\04`,
		`/bad\999escape\040end`:  "/bad\\999escape end",
		`/trailing\`:             `/trailing\`,
		`/two\040\040spaces`:     "/two  spaces",
		`/edge\040`:              "/edge ",
		`/utf8\303\251`:          "/utf8é",
		`/backslash-n\012/inner`: "/backslash-n\n/inner",
	}
	for in, want := range tests {
		if got := unescapeMountinfo(in); got != want {
			t.Errorf("unescapeMountinfo(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestRemoveBuildDir removes a build directory with a host directory
// still bind-mounted in it, as debootstrap in a container leaves its
// chroot's /dev when it is killed: it must be unmounted first, and the
// host's files behind it left alone.
func TestRemoveBuildDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "build")
	dev := filepath.Join(dir, "root", "dev")
	if err := os.MkdirAll(dev, 0o755); err != nil {
		t.Fatal(err)
	}
	host := t.TempDir()
	precious := filepath.Join(host, "precious")
	if err := os.WriteFile(precious, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		if err := syscall.Mount(host, dev, "", syscall.MS_BIND, ""); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { syscall.Unmount(dev, syscall.MNT_DETACH) })
		if mounts, err := mountsUnder(dir); err != nil || !slices.Equal(mounts, []string{dev}) {
			t.Fatalf("mountsUnder(%s) = %q, %v; want %s", dir, mounts, err, dev)
		}
	}
	if err := removeBuildDir(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("%s still there: %v", dir, err)
	}
	if _, err := os.Stat(precious); err != nil {
		t.Errorf("a file of the bind-mounted host directory was removed: %v", err)
	}
	if mounts, err := mountsUnder(dir); err != nil || len(mounts) != 0 {
		t.Errorf("after removeBuildDir, mounts under %s: %q, %v", dir, mounts, err)
	}
}

func TestInstalledPackages(t *testing.T) {
	root := t.TempDir()
	status := "Package: zlib1g\nStatus: install ok installed\nVersion: 1:1.2.13\nDescription: x\n multi-line\n\n" +
		"Package: removed\nStatus: deinstall ok config-files\nVersion: 1\n\n" +
		"Package: adduser\nVersion: 3.134\nStatus: install ok installed\n"
	if err := writeRootFile(root, "var/lib/dpkg/status", 0o644, []byte(status)); err != nil {
		t.Fatal(err)
	}
	got, err := installedPackages(root)
	if want := []string{"adduser=3.134", "zlib1g=1:1.2.13"}; err != nil || !slices.Equal(got, want) {
		t.Errorf("installedPackages = %q, %v; want %q", got, err, want)
	}
}

// TestConfigureDebian runs the configuration step on an empty tree in
// place of an installed system: the files, modes and unit links it makes.
func TestConfigureDebian(t *testing.T) {
	root := t.TempDir()
	agent := filepath.Join(t.TempDir(), "sbuml-guest")
	if err := os.WriteFile(agent, []byte("\x7fELF fake agent"), 0o644); err != nil {
		t.Fatal(err)
	}
	units := filepath.Join(root, "etc/systemd/system")
	// Links the packages made, which the image removes.
	for _, l := range debianDisable {
		os.MkdirAll(filepath.Join(units, filepath.Dir(l)), 0o755)
		if err := os.Symlink("/lib/systemd/system/"+filepath.Base(l), filepath.Join(units, l)); err != nil {
			t.Fatal(err)
		}
	}
	b := &debianBuilder{opts: DebianOptions{AuthorizedKeys: []string{"ssh-ed25519 AAAAkey1 a", "ssh-ed25519 AAAAkey2 b"}, Agent: agent}, root: root}
	if err := b.configure(); err != nil {
		t.Fatal(err)
	}

	files := []struct {
		name string
		mode os.FileMode
		want string
	}{
		{"etc/hostname", 0o644, "sbuml\n"},
		{"etc/fstab", 0o644, "UUID=" + debianDiskUUID + " / ext4"},
		{"etc/resolv.conf", 0o644, ""},
		{"root/.ssh/authorized_keys", 0o600, "ssh-ed25519 AAAAkey1 a\nssh-ed25519 AAAAkey2 b\n"},
		{"usr/local/bin/sbuml-guest", 0o755, "fake agent"},
		{"usr/local/lib/sbuml/ready", 0o755, "echo " + ReadyMarker + " >/dev/console"},
		{"etc/network/interfaces", 0o644, "allow-hotplug eth0\niface eth0 inet dhcp"},
		{"etc/ssh/sshd_config.d/sbuml.conf", 0o644, "PasswordAuthentication no"},
		{"etc/systemd/system/sbuml-guest.service", 0o644, "ExecStart=/usr/local/bin/sbuml-guest daemon"},
		{"etc/udev/rules.d/90-sbuml-guest.rules", 0o644, `ENV{SYSTEMD_WANTS}+="sbuml-guest.service"`},
	}
	for _, f := range files {
		p := filepath.Join(root, f.name)
		fi, err := os.Stat(p)
		if err != nil {
			t.Errorf("%s: %v", f.name, err)
			continue
		}
		data, _ := os.ReadFile(p)
		if fi.Mode().Perm() != f.mode || !strings.Contains(string(data), f.want) {
			t.Errorf("%s: mode %v, contents %q; want mode %v and %q", f.name, fi.Mode().Perm(), data, f.mode, f.want)
		}
	}
	if fi, err := os.Stat(filepath.Join(root, "root/.ssh")); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("root/.ssh: %v, %v; want mode 0700", fi, err)
	}

	// Unit links: enabled (-> the unit), masked (-> /dev/null), disabled
	// (gone).
	links := map[string]string{
		"multi-user.target.wants/sbuml-ready.service": "/etc/systemd/system/sbuml-ready.service",
		"ssh.service.wants/sbuml-ssh-hostkey.service": "/etc/systemd/system/sbuml-ssh-hostkey.service",
		"getty-static.service":                        "/dev/null",
	}
	for _, l := range debianDisable {
		links[l] = ""
	}
	links["multi-user.target.wants/sbuml-guest.service"] = "" // udev starts it
	for name, want := range links {
		p := filepath.Join(units, name)
		target, err := os.Readlink(p)
		if want == "" {
			if _, err := os.Lstat(p); !os.IsNotExist(err) {
				t.Errorf("%s still there (%v)", name, err)
			}
		} else if err != nil || target != want {
			t.Errorf("%s -> %q (%v), want -> %q", name, target, err, want)
		}
	}
	// The initramfs settings are written before the packages, not here.
	if _, err := os.Stat(filepath.Join(root, "etc/initramfs-tools/conf.d/sbuml")); !os.IsNotExist(err) {
		t.Errorf("configure wrote the initramfs settings (%v)", err)
	}
}

func TestDebianRecipeHash(t *testing.T) {
	agent := filepath.Join(t.TempDir(), "agent")
	hash := func(o DebianOptions) string {
		t.Helper()
		h, err := o.RecipeHash()
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	if err := os.WriteFile(agent, []byte("v1"), 0o755); err != nil {
		t.Fatal(err)
	}
	base := hash(DebianOptions{AuthorizedKeys: []string{"ssh-ed25519 A a"}})
	withAgent := hash(DebianOptions{AuthorizedKeys: []string{"ssh-ed25519 A a"}, Agent: agent})
	if err := os.WriteFile(agent, []byte("v2"), 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		opts DebianOptions
		same bool
	}{
		{"default disk size spelt out", DebianOptions{AuthorizedKeys: []string{"ssh-ed25519 A a"}, DiskSize: DefaultDebianDiskSize}, true},
		{"another mirror and cache", DebianOptions{AuthorizedKeys: []string{"ssh-ed25519 A a"}, Mirror: "http://m/debian", CacheDir: "/c"}, true},
		{"another key", DebianOptions{AuthorizedKeys: []string{"ssh-ed25519 B b"}}, false},
		{"another disk size", DebianOptions{AuthorizedKeys: []string{"ssh-ed25519 A a"}, DiskSize: 1 << 30}, false},
		{"another agent binary", DebianOptions{AuthorizedKeys: []string{"ssh-ed25519 A a"}, Agent: agent}, false},
	}
	for _, tt := range tests {
		if got := hash(tt.opts); (got == base) != tt.same || got == withAgent {
			t.Errorf("%s: hash %s, base %s, same wanted %v", tt.name, got, base, tt.same)
		}
	}
	if _, err := (DebianOptions{Agent: "/nonexistent"}).RecipeHash(); err == nil {
		t.Error("RecipeHash with a missing agent binary succeeded")
	}
}

// TestBuildDebianErrors checks the errors BuildDebian gives before it
// starts: each is one line saying what to do.
func TestBuildDebianErrors(t *testing.T) {
	tests := []struct {
		name string
		opts DebianOptions
		path string // PATH for the call, if set
		want string
	}{
		{"no directory", DebianOptions{}, "", "no output directory"},
		{"disk too small", DebianOptions{Dir: "d", DiskSize: 256 << 20}, "", "at least 512 MiB"},
		{"disk not in MiB", DebianOptions{Dir: "d", DiskSize: 1<<30 + 4096}, "", "multiple of 1 MiB"},
		{"key of two lines", DebianOptions{Dir: "d", AuthorizedKeys: []string{"ssh-ed25519 A a\nssh-ed25519 B b"}}, "", "is not one line"},
		{"key without type", DebianOptions{Dir: "d", AuthorizedKeys: []string{"AAAA"}}, "", "is not one line"},
		{"missing agent", DebianOptions{Dir: "d", Agent: "/nonexistent/sbuml-guest"}, "", "agent binary /nonexistent/sbuml-guest is not a regular file"},
		{"no debootstrap", DebianOptions{Dir: "d"}, t.TempDir(), "debootstrap not found in PATH: install the Debian package debootstrap"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if os.Geteuid() != 0 && tt.path != "" {
				t.Skip("the root check comes first")
			}
			if tt.path != "" {
				t.Setenv("PATH", tt.path)
			}
			tt.opts.CacheDir = t.TempDir()
			if tt.opts.Dir != "" {
				tt.opts.Dir = filepath.Join(t.TempDir(), tt.opts.Dir)
			}
			_, err := BuildDebian(t.Context(), tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("BuildDebian: %v, want one line containing %q", err, tt.want)
			}
		})
	}
}
