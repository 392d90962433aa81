// Package web holds the browser side of sbuml ui: the page, its scripts
// and styles, and the libraries they use (xterm.js, noVNC), vendored from
// npm by scripts/ui-assets.sh. The graph view (graph.js) is shared with
// the static sites sbuml publish writes, which WriteGraphSite provides.
package web

import (
	"embed"
	"io/fs"
	"os"
	"path/filepath"
)

//go:embed static
var static embed.FS

// App returns the files of the web application, index.html at the top.
func App() fs.FS {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embedded tree always has static/
	}
	return sub
}

// siteFiles are the files of the graph view that a published site needs:
// no console, no display, no actions.
var siteFiles = []string{"graph.js", "site.js", "style.css"}

// SiteAssets is the directory of a published site that holds the graph
// view's files, which its index.html loads.
const SiteAssets = "assets"

// WriteGraphSite writes the graph view's files into dir/assets, for the
// index.html of a published scrapbook (see sbuml publish).
func WriteGraphSite(dir string) error {
	out := filepath.Join(dir, SiteAssets)
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	for _, name := range siteFiles {
		b, err := fs.ReadFile(static, "static/"+name)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(out, name), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}
