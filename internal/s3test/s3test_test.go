package s3test_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"

	"github.com/sbuml/sbuml/internal/s3test"
)

// TestServer builds versitygw if this host has not (make test runs it
// first, so that the build is not counted in the suite's timeout),
// starts it, and checks what sbuml relies on: PutObject honours
// If-None-Match: * and If-Match.
func TestServer(t *testing.T) {
	ctx := context.Background()
	srv := s3test.Start(t)
	c := srv.Client()
	bucket := srv.Bucket(t)
	put := func(body, ifNoneMatch, ifMatch string) (string, error) {
		in := &s3.PutObjectInput{Bucket: &bucket, Key: aws.String("k"), Body: strings.NewReader(body)}
		if ifNoneMatch != "" {
			in.IfNoneMatch = &ifNoneMatch
		}
		if ifMatch != "" {
			in.IfMatch = &ifMatch
		}
		out, err := c.PutObject(ctx, in)
		if err != nil {
			return "", err
		}
		return aws.ToString(out.ETag), nil
	}
	refused := func(err error) bool {
		var ae smithy.APIError
		return errors.As(err, &ae) && ae.ErrorCode() == "PreconditionFailed"
	}
	etag, err := put("1", "*", "")
	if err != nil {
		t.Fatalf("create with If-None-Match: *: %v", err)
	}
	if _, err := put("2", "*", ""); !refused(err) {
		t.Errorf("replace with If-None-Match: *: %v; want PreconditionFailed", err)
	}
	if _, err := put("3", "", `"0123456789abcdef0123456789abcdef"`); !refused(err) {
		t.Errorf("replace with If-Match on a wrong ETag: %v; want PreconditionFailed", err)
	}
	if _, err := put("4", "", etag); err != nil {
		t.Errorf("replace with If-Match on the right ETag: %v", err)
	}
}
