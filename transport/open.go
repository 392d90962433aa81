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
	// Client makes HTTP requests; nil means http.DefaultClient.
	Client *http.Client
}

// Open returns the Remote at url: a directory path (or file:// URL)
// holding a scrapbook or a published scrapbook; or an http:// or
// https:// URL of a smart server, recognized by its answer to GET
// sbuml-protocol, else of a published scrapbook, recognized by its
// refs.json.
func Open(ctx context.Context, url string, opts OpenOptions) (Remote, error) {
	if p, ok := strings.CutPrefix(url, "file://"); ok {
		return OpenDir(p)
	}
	if !isHTTP(url) {
		if strings.Contains(url, "://") {
			return nil, fmt.Errorf("open remote %s: unsupported URL scheme (use a path, file://, http:// or https://)", url)
		}
		return OpenDir(url)
	}
	client := opts.Client
	if client == nil {
		client = http.DefaultClient
	}
	base := withSlash(url)
	if i := strings.IndexAny(base, "?#"); i >= 0 {
		return nil, fmt.Errorf("open remote %s: a remote URL may not have a query or fragment", url)
	}
	smart, err := probeSmart(ctx, client, base)
	if err != nil {
		return nil, err
	}
	if smart {
		return NewSmart(base, opts.Token, client), nil
	}
	s := NewStatic(base, client)
	if _, err := s.ListRefs(ctx); err != nil {
		return nil, fmt.Errorf("open remote %s: neither an sbuml server (no answer to GET sbuml-protocol) nor a published scrapbook: %w", base, err)
	}
	return s, nil
}

// probeSmart asks base for GET sbuml-protocol. A network failure is an
// error; any answer other than the protocol's means "not smart".
func probeSmart(ctx context.Context, client *http.Client, base string) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", base+"sbuml-protocol", nil)
	if err != nil {
		return false, fmt.Errorf("open remote %s: %w", base, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return false, fmt.Errorf("open remote %s: %w", base, err)
	}
	defer resp.Body.Close()
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
