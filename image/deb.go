package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/sbuml/sbuml/internal/atomicfile"
)

// debPackage is a .deb unpacked into root.
type debPackage struct {
	name, version string
	root          string
}

// String returns "name=version", the form apt-get install accepts.
func (p debPackage) String() string {
	return p.name + "=" + p.version
}

// runCommand runs a program in dir and returns its standard output. On
// failure the error reads "<what> failed: " and the most telling line of
// the program's standard error.
func runCommand(ctx context.Context, dir, what, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if msg := errorLine(stderr.String()); msg != "" {
			return nil, fmt.Errorf("%s failed: %s", what, msg)
		}
		return nil, fmt.Errorf("%s failed: %w", what, err)
	}
	return stdout.Bytes(), nil
}

// errorLine picks the line of a tool's error output worth reporting:
// apt's first "E:" line if there is one, else the last non-empty line that
// is not an apt warning.
func errorLine(stderr string) string {
	var last string
	for _, line := range strings.Split(stderr, "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "E: ") {
			return line
		}
		if line != "" && !strings.HasPrefix(line, "W: ") && !strings.HasPrefix(line, "N: ") {
			last = line
		}
	}
	return last
}

// resolveKernelPackage turns a kernel metapackage such as
// linux-image-cloud-amd64 into the versioned package it depends on, which
// holds the kernel. A package without such a dependency, or one apt does
// not know, is returned as is; downloading it then reports the problem.
func resolveKernelPackage(ctx context.Context, pkg string) string {
	out, err := runCommand(ctx, "", "apt-cache depends "+pkg, "apt-cache", "depends", pkg)
	if err != nil {
		return pkg
	}
	return kernelDependency(pkg, out)
}

// kernelDependency picks the linux-image-* package from the output of
// apt-cache depends, or returns pkg if there is none.
func kernelDependency(pkg string, aptCacheDepends []byte) string {
	for _, line := range strings.Split(string(aptCacheDepends), "\n") {
		line = strings.TrimPrefix(strings.TrimSpace(line), "|")
		dep, ok := strings.CutPrefix(line, "Depends: ")
		if ok && strings.HasPrefix(dep, "linux-image-") {
			return dep
		}
	}
	return pkg
}

// aptURI is one line of apt-get download --print-uris.
type aptURI struct {
	file string
	size int64
	hash string // "SHA256:hex", "SHA512:hex" or empty
}

func parsePrintURIs(pkg string, out []byte) (aptURI, error) {
	for _, line := range strings.Split(string(out), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 3 || !strings.HasPrefix(fields[0], "'") {
			continue
		}
		size, err := strconv.ParseInt(fields[2], 10, 64)
		if err != nil || strings.ContainsAny(fields[1], "/\\") {
			return aptURI{}, fmt.Errorf("apt-get download --print-uris %s: unexpected line %q", pkg, line)
		}
		u := aptURI{file: fields[1], size: size}
		if len(fields) > 3 {
			u.hash = fields[3]
		}
		return u, nil
	}
	return aptURI{}, fmt.Errorf("apt-get download --print-uris %s printed no package", pkg)
}

// fetchDeb returns the path of package pkg's .deb in cacheDir, downloading
// it with apt-get download unless a copy with the expected size and
// checksum is already there. cached reports whether it was.
func fetchDeb(ctx context.Context, pkg, cacheDir string) (path string, cached bool, err error) {
	out, err := runCommand(ctx, "", "apt-get download "+pkg, "apt-get", "download", "--print-uris", pkg)
	if err != nil {
		return "", false, err
	}
	uri, err := parsePrintURIs(pkg, out)
	if err != nil {
		return "", false, err
	}
	path = filepath.Join(cacheDir, uri.file)
	if verifyDeb(path, uri) == nil {
		return path, true, nil
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return "", false, fmt.Errorf("apt-get download %s failed: %w", pkg, err)
	}
	tmp, err := os.MkdirTemp(cacheDir, ".download-")
	if err != nil {
		return "", false, fmt.Errorf("apt-get download %s failed: %w", pkg, err)
	}
	defer os.RemoveAll(tmp)
	if _, err := runCommand(ctx, tmp, "apt-get download "+pkg, "apt-get", "download", pkg); err != nil {
		return "", false, err
	}
	got := filepath.Join(tmp, uri.file)
	if err := verifyDeb(got, uri); err != nil {
		return "", false, fmt.Errorf("apt-get download %s failed: %w", pkg, err)
	}
	if err := os.Rename(got, path); err != nil {
		return "", false, fmt.Errorf("apt-get download %s failed: %w", pkg, err)
	}
	return path, false, nil
}

// verifyDeb checks a downloaded file against apt's size and checksum.
func verifyDeb(path string, uri aptURI) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	algo, want, _ := strings.Cut(uri.hash, ":")
	var h hash.Hash
	switch algo {
	case "SHA256":
		h = sha256.New()
	case "SHA512":
		h = sha512.New()
	default:
		h, want = nil, ""
	}
	var n int64
	if h != nil {
		n, err = io.Copy(h, f)
	} else {
		n, err = io.Copy(io.Discard, f)
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	if n != uri.size {
		return fmt.Errorf("%s has %d bytes, apt expects %d", path, n, uri.size)
	}
	if h != nil && hex.EncodeToString(h.Sum(nil)) != strings.ToLower(want) {
		return fmt.Errorf("%s does not match apt's %s checksum", path, algo)
	}
	return nil
}

// unpackDeb extracts the files of a .deb into dir with dpkg-deb and reads
// its name and version.
func unpackDeb(ctx context.Context, deb, dir string) (debPackage, error) {
	if _, err := os.Stat(deb); err != nil {
		return debPackage{}, fmt.Errorf("unpack package: %w", err)
	}
	out, err := runCommand(ctx, "", "dpkg-deb --show", "dpkg-deb", "--show", "--showformat=${Package} ${Version}", deb)
	if err != nil {
		return debPackage{}, fmt.Errorf("unpack %s: %w", deb, err)
	}
	name, version, _ := strings.Cut(strings.TrimSpace(string(out)), " ")
	if name == "" || version == "" {
		return debPackage{}, fmt.Errorf("unpack %s: dpkg-deb reports no package name and version", deb)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return debPackage{}, fmt.Errorf("unpack %s: %w", deb, err)
	}
	if _, err := runCommand(ctx, "", "dpkg-deb --extract", "dpkg-deb", "--extract", deb, dir); err != nil {
		return debPackage{}, fmt.Errorf("unpack %s: %w", deb, err)
	}
	return debPackage{name: name, version: version, root: dir}, nil
}

// copyFile copies src to dst through a temporary file and a rename, so dst
// is either the old or the complete new file.
func copyFile(dst, src string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	return atomicfile.Write(dst, 0o644, func(w io.Writer) error {
		_, err := io.Copy(w, in)
		return err
	})
}
