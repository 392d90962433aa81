package sbuml

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"html/template"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/sbuml/sbuml/internal/atomicfile"
	"github.com/sbuml/sbuml/objects"
	"github.com/sbuml/sbuml/transport"
)

// PublishResult describes a publish.
type PublishResult struct {
	Dir string `json:"dir"`
	URL string `json:"url"`
	// Refs are the published refs and what happened to each; a ref the
	// scrapbook no longer has is "deleted".
	Refs  []transport.RefResult `json:"refs"`
	Stats *transport.Stats      `json:"stats"`
	// Links are the link files written, relative to Dir.
	Links []string `json:"links"`
	// Snapshots is the number of snapshots index.html lists.
	Snapshots int `json:"snapshots"`
}

// Publish writes the scrapbook's branches and tags into dir as a static
// directory that any web server can serve at url (SBUML's "prepare
// snapshots for posting"): objects/ in the loose layout; each publish's
// new objects also as one pack under packs/, listed in packs.json, so a
// client downloads a publish in a few requests rather than one per
// object; refs.json; index.html listing every snapshot with its message,
// sizes and links, and showing the history as the graph of sbuml ui
// (graph.json, assets/); and a link file naming url and the snapshot per branch
// (branches/NAME.sbuml), tag (tags/NAME.sbuml) and snapshot of their
// history (snapshots/SHORTID.sbuml). Publishing again
// sends only new objects and makes the published refs match the
// scrapbook's. Objects go first and refs.json changes last, so a reader
// never sees a ref to a snapshot that is not all there.
func (s *Scrapbook) Publish(ctx context.Context, dir, url string, opts TransferOptions) (*PublishResult, error) {
	if !isWebURL(url) {
		return nil, fmt.Errorf("publish: --url %q: give the http:// or https:// address where %s will be served (link files may name no other)", url, dir)
	}
	if strings.ContainsAny(url, "?# \t\n") {
		return nil, fmt.Errorf("publish: --url %q may not contain a query, fragment or white space", url)
	}
	url = strings.TrimSuffix(url, "/") + "/"
	var local []transport.Ref
	for _, ns := range []string{"refs/heads/", "refs/tags/"} {
		rs, err := s.Refs.List(ns)
		if err != nil {
			return nil, fmt.Errorf("publish: %w", err)
		}
		for _, r := range rs {
			local = append(local, transport.Ref{Name: r.Name, ID: r.ID})
		}
	}
	if len(local) == 0 {
		return nil, fmt.Errorf("publish: nothing to publish: the scrapbook has no branches or tags")
	}
	pub, err := transport.CreatePublished(dir)
	if err != nil {
		return nil, err
	}
	defer pub.Close()
	res := &PublishResult{Dir: pub.Path(), URL: url}

	updates := make([]transport.RefUpdate, len(local))
	for i, r := range local {
		updates[i] = transport.RefUpdate{Name: r.Name, New: r.ID, Force: true}
	}
	results, stats, err := transport.Push(ctx, s.Objects, pub, updates, opts.transport())
	res.Refs, res.Stats = results, stats
	if err != nil {
		return res, fmt.Errorf("publish: %w", err)
	}
	published, err := pub.ListRefs(ctx)
	if err != nil {
		return res, fmt.Errorf("publish: %w", err)
	}
	keep := map[string]bool{}
	for _, r := range local {
		keep[r.Name] = true
	}
	for _, r := range published.Refs {
		if !keep[r.Name] {
			if err := pub.UpdateRef(ctx, r.Name, r.ID, objects.Zero); err != nil {
				return res, fmt.Errorf("publish: %w", err)
			}
			res.Refs = append(res.Refs, transport.RefResult{Name: r.Name, Old: r.ID, Status: "deleted"})
		}
	}
	if head, err := s.Refs.Symbolic("HEAD"); err == nil && keep[head] {
		if err := pub.SetHead(head); err != nil {
			return res, fmt.Errorf("publish: %w", err)
		}
	}
	if res.Links, res.Snapshots, err = s.writeIndex(ctx, pub.Path(), url, local); err != nil {
		return res, fmt.Errorf("publish: %w", err)
	}
	return res, nil
}

// snapshotLinkPath is where the link file of a published snapshot goes,
// relative to the published directory: named by its short ID, so that
// URL#SHORTID finds it (see FetchLink).
func snapshotLinkPath(short string) string {
	return "snapshots/" + short + LinkExtension
}

// linkPath is where the link file of a published ref goes, relative to
// the published directory.
func linkPath(ref string) string {
	if b, ok := strings.CutPrefix(ref, "refs/heads/"); ok {
		return "branches/" + b + LinkExtension
	}
	return "tags/" + strings.TrimPrefix(ref, "refs/tags/") + LinkExtension
}

// indexRow is one snapshot in index.html.
type indexRow struct {
	Short, Time, Message, Subject string
	Logical, Added                string
	Refs                          []indexRef
	Link, File                    string
}

type indexRef struct{ Name, File string }

// writeIndex writes the link files and index.html of a published
// directory, replacing earlier ones.
func (s *Scrapbook) writeIndex(ctx context.Context, dir, url string, published []transport.Ref) ([]string, int, error) {
	revs := make([]string, len(published))
	byID := map[objects.ID][]indexRef{}
	for i, r := range published {
		revs[i] = r.Name
		short := strings.TrimPrefix(strings.TrimPrefix(r.Name, "refs/heads/"), "refs/")
		byID[r.ID] = append(byID[r.ID], indexRef{Name: short, File: linkPath(r.Name)})
	}
	entries, err := s.Log(ctx, LogOptions{Revs: revs})
	if err != nil {
		return nil, 0, err
	}
	for _, d := range []string{"branches", "tags", "snapshots"} {
		if err := os.RemoveAll(filepath.Join(dir, d)); err != nil {
			return nil, 0, err
		}
	}
	var links []string
	messages := map[objects.ID]LogEntry{}
	for _, e := range entries {
		messages[e.ID] = e
	}
	writeLink := func(rel string, l Link) error {
		b, err := json.MarshalIndent(l, "", "  ")
		if err != nil {
			return err
		}
		p := filepath.Join(dir, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, append(b, '\n'), 0o644); err != nil {
			return err
		}
		links = append(links, rel)
		return nil
	}
	// A link file per branch and tag, following it, and one per snapshot.
	for _, r := range published {
		e := messages[r.ID]
		l := Link{Format: LinkFormat, URL: url, Snapshot: r.ID, Ref: r.Name, Message: firstLine(e.Message), Time: e.Time}
		if err := writeLink(linkPath(r.Name), l); err != nil {
			return nil, 0, err
		}
	}
	for _, e := range entries {
		l := Link{Format: LinkFormat, URL: url, Snapshot: e.ID, Message: firstLine(e.Message), Time: e.Time}
		if err := writeLink(snapshotLinkPath(e.ID.Short()), l); err != nil {
			return nil, 0, err
		}
	}
	if err := s.writeGraphSite(dir, url, published, entries); err != nil {
		return nil, 0, err
	}
	rows := make([]indexRow, len(entries))
	for i, e := range entries {
		rows[i] = indexRow{
			Short: e.ID.Short(), Time: e.Time.UTC().Format(time.RFC3339),
			Message: e.Message, Subject: firstLine(e.Message),
			Logical: transport.FormatBytes(int64(e.LogicalBytes)), Added: transport.FormatBytes(e.AddedBytes),
			Refs: byID[e.ID], Link: url + "#" + e.ID.String(), File: snapshotLinkPath(e.ID.Short()),
		}
	}
	var buf bytes.Buffer
	err = indexTemplate.Execute(&buf, struct {
		URL  string
		Rows []indexRow
	}{url, rows})
	if err != nil {
		return nil, 0, err
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, "index.html"), buf.Bytes(), 0o644); err != nil {
		return nil, 0, err
	}
	return links, len(rows), nil
}

var indexTemplate = template.Must(template.New("index").Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>sbuml scrapbook</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="assets/style.css">
<style>
#static-table { border-collapse: collapse; }
#static-table th, #static-table td { text-align: left; padding: 0.3em 0.8em; border-bottom: 1px solid #ccc; vertical-align: top; }
#static-table td.num { text-align: right; }
</style>
<script type="module" src="assets/site.js"></script>
</head>
<body class="site">
<h1>sbuml scrapbook</h1>
<p>Copy all of it with <code>sbuml clone {{.URL}} DIR</code>.
Run a snapshot with <code>sbuml open FILE.sbuml</code> on a link below, or with
<code>sbuml checkout {{.URL}}#SNAPSHOT MACHINE -c</code>, where SNAPSHOT is an ID as shown, a branch or a tag.</p>
<div id="graph"></div>
<div id="site-details" class="site-details" aria-live="polite"></div>
<h2>Snapshots <span id="snapshot-count"></span></h2>
<ol id="snapshot-list" class="snapshot-list"></ol>
<table id="static-table">
<tr><th>Snapshot</th><th>Time</th><th>Branches and tags</th><th>Message</th><th>Size</th><th>Added</th></tr>
{{- range .Rows}}
<tr>
<td><a href="{{.File}}" type="application/x-sbuml" title="{{.Link}}"><code>{{.Short}}</code></a></td>
<td>{{.Time}}</td>
<td>{{range .Refs}}<a href="{{.File}}" type="application/x-sbuml">{{.Name}}</a> {{end}}</td>
<td title="{{.Message}}">{{.Subject}}</td>
<td class="num">{{.Logical}}</td>
<td class="num">{{.Added}}</td>
</tr>
{{- end}}
</table>
</body>
</html>
`))
