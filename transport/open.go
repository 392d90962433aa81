package transport

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// OpenOptions configure Open.
type OpenOptions struct {
	// Token is the bearer token for pushing to a smart server.
	Token string
	// Client makes HTTP requests; nil means one from NewHTTPClient.
	// Whatever it is, Limits bound every request.
	Client *http.Client
	// Limits bound the remote's requests and ref list.
	Limits Limits
	// Notify, if set, is told what the user should know: that the token
	// is about to travel over plain http to another host.
	Notify func(string)
	// S3 configures a remote in S3; its Client and Limits, if unset, are
	// the ones above.
	S3 S3Options
}

// Open returns the Remote at url: a directory path (or file:// URL)
// holding a scrapbook or a published scrapbook; an http:// or https://
// URL of a smart server, recognized by its answer to GET
// sbuml-protocol, else of a published scrapbook, recognized by its
// refs.json; or an s3:// URL (see OpenS3).
func Open(ctx context.Context, url string, opts OpenOptions) (Remote, error) {
	if p, ok := strings.CutPrefix(url, "file://"); ok {
		return OpenDir(p)
	}
	if IsS3URL(url) {
		o := opts.S3
		if o.Client == nil {
			o.Client = opts.Client
		}
		if o.Limits == (Limits{}) {
			o.Limits = opts.Limits
		}
		return OpenS3(ctx, url, o)
	}
	if !isHTTP(url) {
		if strings.Contains(url, "://") {
			return nil, fmt.Errorf("open remote %s: unsupported URL scheme (use a path, file://, http://, https:// or s3://)", url)
		}
		return OpenDir(url)
	}
	c := newClient(opts.Client, opts.Limits)
	base := withSlash(url)
	if i := strings.IndexAny(base, "?#"); i >= 0 {
		return nil, fmt.Errorf("open remote %s: a remote URL may not have a query or fragment", url)
	}
	smart, err := probeSmart(ctx, c, base)
	if err != nil {
		return nil, err
	}
	if smart {
		return newSmart(base, opts.Token, c, opts.Notify), nil
	}
	s := newStatic(base, c)
	if _, err := s.ListRefs(ctx); err != nil {
		return nil, fmt.Errorf("open remote %s: neither an sbuml server (no answer to GET sbuml-protocol) nor a published scrapbook: %w", base, err)
	}
	return s, nil
}

// probeSmart asks base for GET sbuml-protocol. A network failure or a
// server error is an error; any other answer than the protocol's means
// "not smart".
func probeSmart(ctx context.Context, c *client, base string) (bool, error) {
	resp, err := c.do(ctx, request{method: "GET", url: base + "sbuml-protocol", idempotent: true}, nil)
	if err != nil {
		return false, fmt.Errorf("open remote %s: %w", base, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 500 {
		return false, fmt.Errorf("open remote %s: GET sbuml-protocol: %s", base, resp.Status)
	}
	if resp.StatusCode != http.StatusOK {
		return false, nil
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return false, fmt.Errorf("open remote %s: %w", base, err)
	}
	var info ProtocolInfo
	if json.Unmarshal(b, &info) != nil || !strings.HasPrefix(info.Protocol, "sbuml/") {
		return false, nil
	}
	if info.Protocol != ProtocolName {
		return false, fmt.Errorf("open remote %s: the server speaks %s, this sbuml speaks %s", base, info.Protocol, ProtocolName)
	}
	return true, nil
}

// Download returns the file at url, an http:// or https:// URL, of at
// most limit bytes, within opts.Limits like every request of a remote.
func Download(ctx context.Context, url string, limit int64, opts OpenOptions) ([]byte, error) {
	if !isHTTP(url) {
		return nil, fmt.Errorf("download %s: not an http:// or https:// URL", url)
	}
	c := newClient(opts.Client, opts.Limits)
	defer c.hc.CloseIdleConnections()
	resp, err := c.do(ctx, request{method: "GET", url: url, idempotent: true}, nil)
	if err != nil {
		return nil, fmt.Errorf("download %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("download %s: %s", url, resp.Status)
	}
	b, err := readAll(resp, limit, url)
	if err != nil {
		return nil, fmt.Errorf("download %s: %w", url, err)
	}
	return b, nil
}
