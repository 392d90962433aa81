package image

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"debug/elf"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/klauspost/compress/zstd"
)

// kernelTree is an unpacked linux-image package: the kernel and its module
// tree.
type kernelTree struct {
	version string // kernel release, the name of the module directory
	vmlinuz string // path of the kernel image
	modDir  string // path of lib/modules/<version>
	// files maps a module name (with "_" for "-") to its file, relative
	// to modDir and possibly compressed.
	files map[string]string
	// builtin holds the names of modules built into the kernel.
	builtin map[string]bool
}

// module is a kernel module ready to go into the initramfs.
type module struct {
	name string
	rel  string   // path relative to the module directory, uncompressed (.ko)
	data []byte   // uncompressed ELF object
	deps []string // names of the modules it needs loaded first
}

// moduleSuffixes are the module file suffixes Debian kernels use, with the
// function that decompresses each.
var moduleSuffixes = []struct {
	suffix     string
	decompress func(ctx context.Context, path string) ([]byte, error)
}{
	{".ko", func(_ context.Context, path string) ([]byte, error) { return os.ReadFile(path) }},
	{".ko.gz", gunzipFile},
	{".ko.zst", unzstdFile},
	{".ko.xz", unxzFile},
}

// moduleName normalizes a module name or file base name the way the
// kernel does: dashes and underscores are interchangeable.
func moduleName(s string) string {
	return strings.ReplaceAll(s, "-", "_")
}

// openKernelTree finds the kernel and modules in an unpacked package.
func openKernelTree(root string) (*kernelTree, error) {
	var modBase string
	var versions []string
	for _, base := range []string{"lib/modules", "usr/lib/modules"} {
		entries, err := os.ReadDir(filepath.Join(root, base))
		if err != nil {
			continue
		}
		for _, e := range entries {
			if e.IsDir() {
				versions = append(versions, e.Name())
				modBase = base
			}
		}
	}
	if len(versions) != 1 {
		return nil, fmt.Errorf("want one module directory under /lib/modules, found %d (%s); pass the linux-image-<version> package, not a metapackage", len(versions), strings.Join(versions, ", "))
	}
	k := &kernelTree{
		version: versions[0],
		modDir:  filepath.Join(root, modBase, versions[0]),
		files:   make(map[string]string),
		builtin: make(map[string]bool),
	}
	k.vmlinuz = filepath.Join(root, "boot", "vmlinuz-"+k.version)
	if _, err := os.Stat(k.vmlinuz); err != nil {
		return nil, fmt.Errorf("no kernel for modules %s: %w", k.version, err)
	}
	err := filepath.WalkDir(k.modDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		for _, s := range moduleSuffixes {
			if base, ok := strings.CutSuffix(d.Name(), s.suffix); ok {
				rel, err := filepath.Rel(k.modDir, path)
				if err != nil {
					return err
				}
				k.files[moduleName(base)] = rel
				break
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list modules of %s: %w", k.version, err)
	}
	if err := k.readBuiltin(); err != nil {
		return nil, err
	}
	return k, nil
}

// readBuiltin reads modules.builtin, which lists the modules compiled into
// the kernel as paths such as kernel/fs/ext4/ext4.ko.
func (k *kernelTree) readBuiltin() error {
	f, err := os.Open(filepath.Join(k.modDir, "modules.builtin"))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read builtin modules: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		base := filepath.Base(strings.TrimSpace(sc.Text()))
		if name, ok := strings.CutSuffix(base, ".ko"); ok {
			k.builtin[moduleName(name)] = true
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read %s: %w", f.Name(), err)
	}
	return nil
}

// resolve returns the named modules and everything they depend on, in an
// order in which each module comes after its dependencies. Modules built
// into the kernel are left out.
func (k *kernelTree) resolve(ctx context.Context, names []string) ([]module, error) {
	var order []module
	state := make(map[string]int) // 0 unvisited, 1 in progress, 2 done
	var visit func(name string, chain []string) error
	visit = func(name string, chain []string) error {
		chain = append(chain, name)
		switch state[name] {
		case 1:
			return fmt.Errorf("module dependency cycle: %s", strings.Join(chain, " -> "))
		case 2:
			return nil
		}
		if k.builtin[name] {
			state[name] = 2
			return nil
		}
		rel, ok := k.files[name]
		if !ok {
			if len(chain) > 1 {
				return fmt.Errorf("module %s needed by %s not found in kernel %s", name, chain[len(chain)-2], k.version)
			}
			return fmt.Errorf("module %s not found in kernel %s", name, k.version)
		}
		state[name] = 1
		m, deps, err := k.load(ctx, name, rel)
		if err != nil {
			return err
		}
		m.deps = deps
		for _, dep := range deps {
			if err := visit(dep, chain); err != nil {
				return err
			}
		}
		state[name] = 2
		order = append(order, m)
		return nil
	}
	for _, name := range names {
		if err := visit(moduleName(name), nil); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// load reads and decompresses a module and returns it with the names of
// the modules it needs loaded first, sorted.
func (k *kernelTree) load(ctx context.Context, name, rel string) (module, []string, error) {
	path := filepath.Join(k.modDir, rel)
	var data []byte
	var err error
	for _, s := range moduleSuffixes {
		if base, ok := strings.CutSuffix(rel, s.suffix); ok {
			data, err = s.decompress(ctx, path)
			rel = base + ".ko"
			break
		}
	}
	if err != nil {
		return module{}, nil, fmt.Errorf("read module %s: %w", path, err)
	}
	deps, err := moduleDepends(data)
	if err != nil {
		return module{}, nil, fmt.Errorf("read module %s: %w", path, err)
	}
	// Optional pre-dependencies count only when the module exists.
	present := slices.Clone(deps.hard)
	for _, d := range deps.softPre {
		if _, ok := k.files[d]; ok && !slices.Contains(present, d) {
			present = append(present, d)
		}
	}
	slices.Sort(present)
	present = slices.Compact(present)
	return module{name: name, rel: filepath.ToSlash(rel), data: data}, present, nil
}

// moduleDeps holds the dependencies a module declares in its .modinfo
// section: "depends=" modules must be loaded first; "softdep=pre:" modules
// should be.
type moduleDeps struct {
	hard, softPre []string
}

// moduleDepends reads the .modinfo section of a module's ELF object.
func moduleDepends(obj []byte) (moduleDeps, error) {
	f, err := elf.NewFile(bytes.NewReader(obj))
	if err != nil {
		return moduleDeps{}, err
	}
	sec := f.Section(".modinfo")
	if sec == nil {
		return moduleDeps{}, fmt.Errorf("no .modinfo section")
	}
	info, err := sec.Data()
	if err != nil {
		return moduleDeps{}, fmt.Errorf("read .modinfo: %w", err)
	}
	var deps moduleDeps
	for _, field := range bytes.Split(info, []byte{0}) {
		key, value, _ := strings.Cut(string(field), "=")
		switch key {
		case "depends":
			for _, d := range strings.Split(value, ",") {
				if d = strings.TrimSpace(d); d != "" {
					deps.hard = append(deps.hard, moduleName(d))
				}
			}
		case "softdep":
			// Format: "pre: a b post: c".
			pre := false
			for _, word := range strings.Fields(value) {
				switch word {
				case "pre:":
					pre = true
				case "post:":
					pre = false
				default:
					if pre {
						deps.softPre = append(deps.softPre, moduleName(word))
					}
				}
			}
		}
	}
	return deps, nil
}

func gunzipFile(_ context.Context, path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return nil, err
	}
	return io.ReadAll(zr)
}

func unzstdFile(_ context.Context, path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	zr, err := zstd.NewReader(f)
	if err != nil {
		return nil, err
	}
	defer zr.Close()
	return io.ReadAll(zr)
}

// unxzFile decompresses with the xz program (Debian package xz-utils),
// which Debian kernels from trixie on need for their .ko.xz modules.
func unxzFile(ctx context.Context, path string) ([]byte, error) {
	return runCommand(ctx, "", "xz --decompress", "xz", "--decompress", "--stdout", path)
}
