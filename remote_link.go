package sbuml

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/sbuml/sbuml/objects"
	"github.com/sbuml/sbuml/transport"
)

// LinkFormat is the version of the .sbuml link file format.
const LinkFormat = 1

// LinkExtension is the file name extension of link files; their MIME
// type is LinkMIMEType.
const (
	LinkExtension = ".sbuml"
	LinkMIMEType  = "application/x-sbuml"
)

// maxLinkSize bounds a link file.
const maxLinkSize = 64 << 10

// A Link points at one snapshot of a published or served scrapbook: what
// `sbuml publish` writes as NAME.sbuml for each branch and tag, so that a
// browser can hand it to `sbuml open`. It is a small JSON object:
//
//	{"sbuml": 1, "url": "https://example.org/book/", "snapshot": "<64 hex>",
//	 "ref": "refs/heads/main", "message": "...", "time": "2026-11-22T04:00:00Z"}
//
// Only sbuml, url and snapshot are required.
type Link struct {
	Format   int        `json:"sbuml"`
	URL      string     `json:"url"`
	Snapshot objects.ID `json:"snapshot"`
	Ref      string     `json:"ref,omitempty"`
	Message  string     `json:"message,omitempty"`
	Time     time.Time  `json:"time,omitzero"`
}

// String returns the link as "URL#SNAPSHOT".
func (l *Link) String() string { return l.URL + "#" + l.Snapshot.String() }

// ParseLink decodes and checks the content of a link file.
func ParseLink(data []byte) (*Link, error) {
	var l Link
	if err := json.Unmarshal(data, &l); err != nil {
		return nil, fmt.Errorf("not an sbuml link file: %v", err)
	}
	if l.Format != LinkFormat {
		return nil, fmt.Errorf("sbuml link format %d, this sbuml reads format %d", l.Format, LinkFormat)
	}
	if l.Snapshot.IsZero() {
		return nil, fmt.Errorf("sbuml link names no snapshot")
	}
	if _, err := normalizeURL(l.URL); err != nil || !strings.Contains(l.URL, "://") {
		return nil, fmt.Errorf("sbuml link has a bad URL %q: want http://, https:// or file://", l.URL)
	}
	return &l, nil
}

// FetchURL fetches into the scrapbook one snapshot of another scrapbook
// and everything it reaches that this scrapbook lacks, and returns its
// ID. link is "URL#SNAPSHOT" (SNAPSHOT a full ID, or a branch or tag of
// the remote; without it, the remote's HEAD), or a .sbuml link file (a
// path, or an http(s) URL ending in .sbuml). No ref is changed.
func (s *Scrapbook) FetchURL(ctx context.Context, link string) (objects.ID, error) {
	id, _, err := s.FetchLink(ctx, link, TransferOptions{})
	return id, err
}

// FetchLink is FetchURL with options, also returning the transfer's stats.
func (s *Scrapbook) FetchLink(ctx context.Context, link string, opts TransferOptions) (objects.ID, *transport.Stats, error) {
	return s.fetchLink(ctx, link, opts, nil)
}

// fetchLink is FetchLink; if check is not nil, it is shown the snapshot's
// top tree, read from the remote without storing it, before anything is
// downloaded, and an error from it stops the fetch.
func (s *Scrapbook) fetchLink(ctx context.Context, link string, opts TransferOptions, check func(*objects.Tree) error) (objects.ID, *transport.Stats, error) {
	release, err := s.lockObjects()
	if err != nil {
		return objects.Zero, nil, fmt.Errorf("fetch %s: %w", link, err)
	}
	defer release()
	url, rev, err := resolveLink(ctx, link, opts.Client)
	if err != nil {
		return objects.Zero, nil, fmt.Errorf("fetch %s: %w", link, err)
	}
	r, err := transport.Open(ctx, url, transport.OpenOptions{Client: opts.Client})
	if err != nil {
		return objects.Zero, nil, fmt.Errorf("fetch %s: %w", link, err)
	}
	defer r.Close()
	id, err := objects.ParseID(rev)
	if err != nil {
		list, err := r.ListRefs(ctx)
		if err != nil {
			return objects.Zero, nil, fmt.Errorf("fetch %s: %w", link, err)
		}
		name := rev
		if name == "" {
			if name = list.Head; name == "" {
				return objects.Zero, nil, fmt.Errorf("fetch %s: the remote has no HEAD; name a snapshot as URL#SNAPSHOT", link)
			}
		}
		if ref, ok := findRemoteRef(list, name); ok {
			id = ref.ID
		} else if id, ok = publishedShortID(ctx, url, rev, opts.Client); !ok {
			return objects.Zero, nil, fmt.Errorf("fetch %s: %q is neither a snapshot ID nor a branch or tag of the remote", link, rev)
		}
	}
	if check != nil {
		tree, err := peekTree(ctx, r, id)
		if err == nil {
			err = check(tree)
		}
		if err != nil {
			return objects.Zero, nil, fmt.Errorf("fetch %s: snapshot %s: %w", link, id.Short(), err)
		}
	}
	stats, err := transport.Fetch(ctx, s.Objects, r, []objects.ID{id}, opts.transport())
	if err != nil {
		return objects.Zero, stats, err
	}
	return id, stats, nil
}

// peekTree reads snapshot id and its top tree from r, verified, without
// storing them.
func peekTree(ctx context.Context, r transport.Remote, id objects.ID) (*objects.Tree, error) {
	get := func(id objects.ID) ([]byte, error) {
		var enc []byte
		err := r.Get(ctx, []objects.ID{id}, func(got objects.ID, stored []byte) error {
			var err error
			enc, err = objects.Unseal(got, stored)
			return err
		})
		return enc, err
	}
	enc, err := get(id)
	if err != nil {
		return nil, err
	}
	sn, err := objects.DecodeSnapshot(enc)
	if err != nil {
		return nil, err
	}
	if enc, err = get(sn.Tree); err != nil {
		return nil, err
	}
	return objects.DecodeTree(enc)
}

// publishedShortID finds the snapshot whose short ID (as index.html shows
// it) is short in the published scrapbook at url, by its link file.
func publishedShortID(ctx context.Context, url, short string, client *http.Client) (objects.ID, bool) {
	if len(short) != len(objects.Zero.Short()) || strings.Trim(short, "0123456789abcdef") != "" {
		return objects.Zero, false
	}
	rel := snapshotLinkPath(short)
	var l *Link
	var err error
	if strings.HasPrefix(url, "http://") || strings.HasPrefix(url, "https://") {
		l, err = downloadLink(ctx, strings.TrimSuffix(url, "/")+"/"+rel, client)
	} else {
		var b []byte
		if b, err = os.ReadFile(filepath.Join(strings.TrimPrefix(url, "file://"), filepath.FromSlash(rel))); err == nil {
			l, err = ParseLink(b)
		}
	}
	if err != nil || !strings.HasPrefix(l.Snapshot.String(), short) {
		return objects.Zero, false
	}
	return l.Snapshot, true
}

// resolveLink turns a link argument into a remote URL and a revision.
func resolveLink(ctx context.Context, link string, client *http.Client) (url, rev string, err error) {
	if fi, err := os.Stat(link); err == nil && fi.Mode().IsRegular() {
		f, err := os.Open(link)
		if err != nil {
			return "", "", err
		}
		defer f.Close()
		b, err := io.ReadAll(io.LimitReader(f, maxLinkSize))
		if err != nil {
			return "", "", err
		}
		l, err := ParseLink(b)
		if err != nil {
			return "", "", fmt.Errorf("%s: %w", link, err)
		}
		return l.URL, l.Snapshot.String(), nil
	}
	base, frag, hasFrag := strings.Cut(link, "#")
	if !hasFrag && strings.HasSuffix(link, LinkExtension) && (strings.HasPrefix(link, "http://") || strings.HasPrefix(link, "https://")) {
		l, err := downloadLink(ctx, link, client)
		if err != nil {
			return "", "", err
		}
		return l.URL, l.Snapshot.String(), nil
	}
	if hasFrag && frag == "" {
		return "", "", fmt.Errorf("empty snapshot after '#'")
	}
	return base, frag, nil
}

// downloadLink reads a link file from the web.
func downloadLink(ctx context.Context, url string, client *http.Client) (*Link, error) {
	if client == nil {
		client = http.DefaultClient
	}
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxLinkSize))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	l, err := ParseLink(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", url, err)
	}
	return l, nil
}
