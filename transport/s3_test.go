package transport_test

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/sbuml/sbuml/internal/s3test"
	"github.com/sbuml/sbuml/transport"
)

// TestMain reaches S3 through the environment, as users do, and stops
// the shared S3 server when the tests end.
func TestMain(m *testing.M) {
	for _, kv := range (&s3test.Server{}).Env() {
		k, v, _ := strings.Cut(kv, "=")
		if k != "AWS_ENDPOINT_URL" {
			os.Setenv(k, v)
		}
	}
	code := m.Run()
	s3test.StopShared()
	os.Exit(code)
}

// s3Options returns the options that reach the shared S3 server.
func s3Options(t testing.TB) transport.S3Options {
	return transport.S3Options{Endpoint: s3test.Shared(t).Endpoint, CacheDir: t.TempDir()}
}

// openS3 opens the remote at url on the shared S3 server.
func openS3(t testing.TB, url string) *transport.S3 {
	t.Helper()
	r, err := transport.OpenS3(context.Background(), url, s3Options(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// newS3Backing makes an empty scrapbook in a new bucket of the shared S3
// server (a push's first step makes it) and returns its URL.
func newS3Backing(t testing.TB) string {
	t.Helper()
	url := "s3://" + s3test.Shared(t).Bucket(t) + "/book"
	r := openS3(t, url)
	if err := r.Put(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	return url
}
