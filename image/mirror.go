package image

import (
	"bufio"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// DefaultMirror is the Debian archive BuildDebian installs from when
// neither DebianOptions.Mirror nor the host's apt names one for
// DebianSuite.
const DefaultMirror = "http://deb.debian.org/debian"

// HostMirror returns the archive the host's apt fetches DebianSuite from
// (its sources.list and sources.list.d), or DefaultMirror if it names
// none: a host that reaches its own mirror reaches it for the image too.
func HostMirror() string {
	if m := findMirror("/etc/apt", DebianSuite); m != "" {
		return m
	}
	return DefaultMirror
}

// findMirror returns the first http or https URI of a "deb" source for
// suite in the apt configuration directory dir, or "".
func findMirror(dir, suite string) string {
	files := []string{filepath.Join(dir, "sources.list")}
	for _, pattern := range []string{"*.list", "*.sources"} {
		m, _ := filepath.Glob(filepath.Join(dir, "sources.list.d", pattern))
		slices.Sort(m)
		files = append(files, m...)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var sources []aptSource
		if strings.HasSuffix(f, ".sources") {
			sources = parseDeb822Sources(string(data))
		} else {
			sources = parseOneLineSources(string(data))
		}
		for _, s := range sources {
			if s.typ == "deb" && s.suite == suite && (strings.HasPrefix(s.uri, "http://") || strings.HasPrefix(s.uri, "https://")) {
				return strings.TrimSuffix(s.uri, "/")
			}
		}
	}
	return ""
}

// aptSource is one type, URI and suite of an apt source.
type aptSource struct {
	typ, uri, suite string
}

// parseOneLineSources reads the sources.list format:
// "deb [options] URI suite [component…]".
func parseOneLineSources(data string) []aptSource {
	var out []aptSource
	sc := bufio.NewScanner(strings.NewReader(data))
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		line = strings.TrimSpace(line)
		typ, rest, _ := strings.Cut(line, " ")
		rest = strings.TrimSpace(rest)
		if strings.HasPrefix(rest, "[") {
			_, rest, _ = strings.Cut(rest, "]")
		}
		f := strings.Fields(rest)
		if len(f) >= 2 {
			out = append(out, aptSource{typ: typ, uri: f[0], suite: f[1]})
		}
	}
	return out
}

// parseDeb822Sources reads the deb822 .sources format: paragraphs of
// "Field: value" lines, where Types, URIs and Suites hold lists.
func parseDeb822Sources(data string) []aptSource {
	var out []aptSource
	fields := map[string]string{}
	flush := func() {
		if !strings.EqualFold(fields["enabled"], "no") {
			for _, typ := range strings.Fields(fields["types"]) {
				for _, uri := range strings.Fields(fields["uris"]) {
					for _, suite := range strings.Fields(fields["suites"]) {
						out = append(out, aptSource{typ: typ, uri: uri, suite: suite})
					}
				}
			}
		}
		fields = map[string]string{}
	}
	var last string
	sc := bufio.NewScanner(strings.NewReader(data))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.TrimSpace(line) == "":
			flush()
		case strings.HasPrefix(line, "#"):
		case line[0] == ' ' || line[0] == '\t': // continuation
			if last != "" {
				fields[last] += " " + strings.TrimSpace(line)
			}
		default:
			k, v, _ := strings.Cut(line, ":")
			last = strings.ToLower(strings.TrimSpace(k))
			fields[last] = strings.TrimSpace(v)
		}
	}
	flush()
	return out
}
