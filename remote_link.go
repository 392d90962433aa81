package sbuml

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
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
	if err := checkLinkURL(l.URL); err != nil {
		return nil, fmt.Errorf("sbuml link: %w", err)
	}
	return &l, nil
}

// checkLinkURL checks the URL of a link: an http://, https:// or s3://
// URL that a remote can have. A link is data from elsewhere: one naming
// a path or a file:// URL would make sbuml read a scrapbook of this
// machine that the link's author chose.
func checkLinkURL(u string) error {
	if !isWebURL(u) && !transport.IsS3URL(u) {
		return fmt.Errorf("URL %q: a link must name an http://, https:// or s3:// URL", u)
	}
	if _, err := normalizeURL(u); err != nil {
		return err
	}
	return nil
}

// isWebURL reports whether u is an http:// or https:// URL with a host.
func isWebURL(u string) bool {
	p, err := url.Parse(u)
	return err == nil && (p.Scheme == "http" || p.Scheme == "https") && p.Host != ""
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
// downloaded, and an error from it stops the fetch. The stats count all
// that traveled, the peek included.
func (s *Scrapbook) fetchLink(ctx context.Context, link string, opts TransferOptions, check func(*objects.Tree) error) (objects.ID, *transport.Stats, error) {
	release, err := s.lockObjects()
	if err != nil {
		return objects.Zero, nil, fmt.Errorf("fetch %s: %w", link, err)
	}
	defer release()
	remote, rev, err := resolveLink(ctx, link, opts)
	if err != nil {
		return objects.Zero, nil, fmt.Errorf("fetch %s: %w", link, err)
	}
	o := opts.open("")
	o.S3 = s3Options(s.s3SettingsFor(remote, opts.S3), s.Dir)
	r, err := transport.Open(ctx, remote, o)
	if err != nil {
		return objects.Zero, nil, fmt.Errorf("fetch %s: %w", link, err)
	}
	defer r.Close()
	id, err := remoteRevision(ctx, r, remote, rev, opts)
	if err != nil {
		return objects.Zero, nil, fmt.Errorf("fetch %s: %w", link, err)
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
	if stats != nil {
		// Fetch counts what it moved; the remote was read before too (its
		// refs, a peek, the pack indexes, packs downloaded whole).
		t := r.Traffic()
		stats.BytesSent, stats.BytesReceived = t.Sent, t.Received
	}
	if err != nil {
		return objects.Zero, stats, err
	}
	return id, stats, nil
}

// remoteRevision finds rev (a full ID, a branch or tag, a short ID of a
// published snapshot, or "" for HEAD) on remote r at remote.
func remoteRevision(ctx context.Context, r transport.Remote, remote, rev string, opts TransferOptions) (objects.ID, error) {
	if id, err := objects.ParseID(rev); err == nil {
		return id, nil
	}
	list, err := r.ListRefs(ctx)
	if err != nil {
		return objects.Zero, err
	}
	name := rev
	if name == "" {
		if name = list.Head; name == "" {
			return objects.Zero, fmt.Errorf("the remote has no HEAD; name a snapshot as URL#SNAPSHOT")
		}
	}
	if ref, ok := findRemoteRef(list, name); ok {
		return ref.ID, nil
	}
	if id, ok := publishedShortID(ctx, remote, rev, opts); ok {
		return id, nil
	}
	return objects.Zero, fmt.Errorf("%q is neither a snapshot ID nor a branch or tag of the remote", rev)
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
func publishedShortID(ctx context.Context, remote, short string, opts TransferOptions) (objects.ID, bool) {
	if len(short) != len(objects.Zero.Short()) || strings.Trim(short, "0123456789abcdef") != "" {
		return objects.Zero, false
	}
	l, err := downloadLink(ctx, strings.TrimSuffix(remote, "/")+"/"+snapshotLinkPath(short), opts)
	if err != nil || !strings.HasPrefix(l.Snapshot.String(), short) {
		return objects.Zero, false
	}
	return l.Snapshot, true
}

// resolveLink turns a link argument into a remote URL and a revision: a
// link file on this machine, the URL of one (which must send the
// download to its own host), or URL#SNAPSHOT. The URL is always http or
// https.
func resolveLink(ctx context.Context, link string, opts TransferOptions) (remote, rev string, err error) {
	if fi, err := os.Stat(link); err == nil && fi.Mode().IsRegular() {
		l, err := readLinkFile(link)
		if err != nil {
			return "", "", err
		}
		if opts.Notify != nil {
			opts.Notify(fmt.Sprintf("link file %s sends the download to %s", link, hostOf(l.URL)))
		}
		return l.URL, l.Snapshot.String(), nil
	}
	base, frag, hasFrag := strings.Cut(link, "#")
	if !hasFrag && strings.HasSuffix(link, LinkExtension) && isWebURL(link) {
		l, err := downloadLink(ctx, link, opts)
		if err != nil {
			return "", "", err
		}
		if hostOf(l.URL) != hostOf(link) {
			return "", "", fmt.Errorf("the link sends the download to another host, %s; sbuml downloads only from the host a link comes from (fetch %s#%s yourself if you trust it)",
				hostOf(l.URL), l.URL, l.Snapshot)
		}
		return l.URL, l.Snapshot.String(), nil
	}
	if hasFrag && frag == "" {
		return "", "", fmt.Errorf("empty snapshot after '#'")
	}
	if transport.IsS3URL(base) {
		u, err := normalizeURL(base)
		return u, frag, err
	}
	if !isWebURL(base) {
		return "", "", fmt.Errorf("%q is not an http://, https:// or s3:// URL; for a scrapbook on this machine, add it with 'sbuml remote add' and pull", base)
	}
	return base, frag, nil
}

// readLinkFile reads a link file of this machine.
func readLinkFile(name string) (*Link, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxLinkSize))
	if err != nil {
		return nil, err
	}
	l, err := ParseLink(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return l, nil
}

// hostOf returns the host (and port) of a URL, or the bucket of an s3://
// URL with the scheme.
func hostOf(u string) string {
	if transport.IsS3URL(u) {
		bucket, _, _ := transport.ParseS3URL(u)
		return transport.S3Scheme + bucket
	}
	p, err := url.Parse(u)
	if err != nil {
		return u
	}
	return p.Host
}

// downloadLink reads a link file from the web.
func downloadLink(ctx context.Context, link string, opts TransferOptions) (*Link, error) {
	b, err := transport.Download(ctx, link, maxLinkSize, opts.open(""))
	if err != nil {
		return nil, err
	}
	l, err := ParseLink(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", link, err)
	}
	return l, nil
}
