package image

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestKernelDependency(t *testing.T) {
	tests := []struct {
		pkg, out, want string
	}{
		{"linux-image-cloud-amd64", "linux-image-cloud-amd64\n  Depends: linux-image-6.1.0-56-cloud-amd64\n", "linux-image-6.1.0-56-cloud-amd64"},
		{"linux-image-amd64", "linux-image-amd64\n |Depends: linux-image-6.12.9-amd64\n  Depends: linux-image-6.12.8-amd64\n", "linux-image-6.12.9-amd64"},
		{"linux-image-6.1.0-56-cloud-amd64", "linux-image-6.1.0-56-cloud-amd64\n  Depends: kmod\n  Depends: linux-base\n  Recommends: apparmor\n", "linux-image-6.1.0-56-cloud-amd64"},
		{"x", "", "x"},
	}
	for _, tt := range tests {
		if got := kernelDependency(tt.pkg, []byte(tt.out)); got != tt.want {
			t.Errorf("kernelDependency(%s) = %s, want %s", tt.pkg, got, tt.want)
		}
	}
}

func TestParsePrintURIs(t *testing.T) {
	line := "'http://deb.debian.org/debian/pool/main/b/busybox/busybox-static_1.35.0-4%2bdeb12u1%2bb1_amd64.deb' busybox-static_1%3a1.35.0-4+deb12u1+b1_amd64.deb 928188 SHA256:3d3fdbe91d4660c873e14b092c213fe81c1da6362daa236eb25d0171eb108744\n"
	u, err := parsePrintURIs("busybox-static", []byte(line))
	if err != nil {
		t.Fatal(err)
	}
	want := aptURI{file: "busybox-static_1%3a1.35.0-4+deb12u1+b1_amd64.deb", size: 928188, hash: "SHA256:3d3fdbe91d4660c873e14b092c213fe81c1da6362daa236eb25d0171eb108744"}
	if u != want {
		t.Errorf("got %+v, want %+v", u, want)
	}
	for _, bad := range []string{"", "Reading package lists...\n", "'http://x/y.deb' ../evil.deb 10 SHA256:00\n", "'http://x/y.deb' y.deb ten SHA256:00\n"} {
		if _, err := parsePrintURIs("p", []byte(bad)); err == nil {
			t.Errorf("parsePrintURIs accepted %q", bad)
		}
	}
}

func TestVerifyDeb(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.deb")
	if err := os.WriteFile(path, []byte("abc"), 0o644); err != nil {
		t.Fatal(err)
	}
	const sha256abc = "SHA256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
	tests := []struct {
		uri  aptURI
		want string // "" for success
	}{
		{aptURI{size: 3, hash: sha256abc}, ""},
		{aptURI{size: 3, hash: "SHA256:BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD"}, ""},
		{aptURI{size: 3}, ""},
		{aptURI{size: 4, hash: sha256abc}, "has 3 bytes, apt expects 4"},
		{aptURI{size: 3, hash: "SHA256:00"}, "does not match apt's SHA256 checksum"},
		{aptURI{size: 3, hash: "SHA512:00"}, "does not match apt's SHA512 checksum"},
	}
	for _, tt := range tests {
		err := verifyDeb(path, tt.uri)
		if (err == nil) != (tt.want == "") || err != nil && !strings.Contains(err.Error(), tt.want) {
			t.Errorf("verifyDeb(%+v) = %v, want %q", tt.uri, err, tt.want)
		}
	}
}

func TestErrorLine(t *testing.T) {
	tests := []struct{ stderr, want string }{
		{"W: Download is performed unsandboxed as root\nE: Unable to locate package x\nE: second\n", "E: Unable to locate package x"},
		{"dpkg-deb: error: not a Debian format archive\n\n", "dpkg-deb: error: not a Debian format archive"},
		{"W: only a warning\n", ""},
		{"", ""},
	}
	for _, tt := range tests {
		if got := errorLine(tt.stderr); got != tt.want {
			t.Errorf("errorLine(%q) = %q, want %q", tt.stderr, got, tt.want)
		}
	}
}
