package transport_test

import (
	"testing"

	"github.com/sbuml/sbuml/transport"
)

func TestParseS3URL(t *testing.T) {
	for _, tc := range []struct {
		url, bucket, prefix string
		bad                 bool
	}{
		{url: "s3://team-book", bucket: "team-book"},
		{url: "s3://team.book/", bucket: "team.book"},
		{url: "s3://book/a/b/", bucket: "book", prefix: "a/b"},
		{url: "s3://Book/x", bad: true},
		{url: "s3://ab/x", bad: true},
		{url: "s3://a..b/x", bad: true},
		{url: "s3://book/a//b", bad: true},
		{url: "s3://book/a/../b", bad: true},
		{url: "s3://book/a b", bad: true},
		{url: "s3://book/a#b", bad: true},
		{url: "http://book/a", bad: true},
	} {
		bucket, prefix, err := transport.ParseS3URL(tc.url)
		if tc.bad {
			if err == nil {
				t.Errorf("ParseS3URL(%q) = %q, %q; want an error", tc.url, bucket, prefix)
			}
			continue
		}
		if err != nil || bucket != tc.bucket || prefix != tc.prefix {
			t.Errorf("ParseS3URL(%q) = %q, %q, %v; want %q, %q", tc.url, bucket, prefix, err, tc.bucket, tc.prefix)
		}
	}
}
