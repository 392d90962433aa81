package transport

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/sbuml/sbuml/objects"
)

// A putCond is the condition of a PutObject.
type putCond struct {
	ifNoneMatch bool   // If-None-Match: *: create only
	ifMatch     string // If-Match: ETag: replace only that version
}

// putPlain is an unconditional PutObject.
var putPlain = putCond{}

// errPrecondition marks a conditional write the store refused.
var errPrecondition = errors.New("the object is not as the condition says")

// putObject writes data at key below the prefix, under cond. A refused
// condition gives an error wrapping errPrecondition.
func (s *S3) putObject(ctx context.Context, key string, data []byte, cond putCond) error {
	_, err := s.putObjectETag(ctx, key, data, cond)
	return err
}

// putObjectETag is putObject that also returns the new ETag.
func (s *S3) putObjectETag(ctx context.Context, key string, data []byte, cond putCond) (string, error) {
	in := &s3.PutObjectInput{Bucket: &s.bucket, Key: aws.String(s.key(key)), Body: bytes.NewReader(data), ContentLength: aws.Int64(int64(len(data)))}
	if cond.ifNoneMatch {
		in.IfNoneMatch = aws.String("*")
	}
	if cond.ifMatch != "" {
		in.IfMatch = aws.String(cond.ifMatch)
	}
	out, err := s.api.PutObject(s.withCount(ctx), in)
	if err != nil {
		if (cond.ifNoneMatch || cond.ifMatch != "") && isS3Precondition(err) {
			return "", fmt.Errorf("remote %s: PUT %s: %w", s.url, s.key(key), errPrecondition)
		}
		return "", s.errS3("PUT", s.key(key), err)
	}
	return aws.ToString(out.ETag), nil
}

// deleteObject removes key below the prefix; a missing key is no error.
func (s *S3) deleteObject(ctx context.Context, key string) error {
	_, err := s.api.DeleteObject(s.withCount(ctx), &s3.DeleteObjectInput{Bucket: &s.bucket, Key: aws.String(s.key(key))})
	if err != nil && !isS3NotFound(err) {
		return s.errS3("DELETE", s.key(key), err)
	}
	return nil
}

// Multipart uploads: objects larger than multipartOver are sent in parts
// of partSize, several at once. A push sends batches of s3BatchBytes,
// each a pack (two if it holds both chunks and other objects).
const (
	multipartOver = 8 << 20
	partSize      = 8 << 20
	s3BatchBytes  = 16 << 20
)

func (s *S3) sendBatchBytes() int { return s3BatchBytes }

// putLarge writes data at key, in parts if it is large. A multipart
// upload that fails is aborted; one left behind by a killed process is
// aborted by gc.
func (s *S3) putLarge(ctx context.Context, key string, data []byte) error {
	if len(data) <= multipartOver {
		return s.putObject(ctx, key, data, putPlain)
	}
	full := aws.String(s.key(key))
	cctx := s.withCount(ctx)
	up, err := s.api.CreateMultipartUpload(cctx, &s3.CreateMultipartUploadInput{Bucket: &s.bucket, Key: full})
	if err != nil {
		return s.errS3("start the upload of", *full, err)
	}
	parts := make([]types.CompletedPart, (len(data)+partSize-1)/partSize)
	g := newGroup(ctx, 4)
	for i := range parts {
		g.run(func(ctx context.Context) error {
			chunk := data[i*partSize : min((i+1)*partSize, len(data))]
			out, err := s.api.UploadPart(s.withCount(ctx), &s3.UploadPartInput{
				Bucket: &s.bucket, Key: full, UploadId: up.UploadId, PartNumber: aws.Int32(int32(i + 1)),
				Body: bytes.NewReader(chunk), ContentLength: aws.Int64(int64(len(chunk))),
			})
			if err != nil {
				return s.errS3(fmt.Sprintf("upload part %d of", i+1), *full, err)
			}
			parts[i] = types.CompletedPart{ETag: out.ETag, PartNumber: aws.Int32(int32(i + 1))}
			return nil
		})
	}
	err = g.wait()
	if err == nil {
		err = ctx.Err()
	}
	if err == nil {
		_, err = s.api.CompleteMultipartUpload(cctx, &s3.CompleteMultipartUploadInput{
			Bucket: &s.bucket, Key: full, UploadId: up.UploadId, MultipartUpload: &types.CompletedMultipartUpload{Parts: parts},
		})
		err = s.errS3("complete the upload of", *full, err)
	}
	if err != nil {
		s.api.AbortMultipartUpload(context.WithoutCancel(cctx), &s3.AbortMultipartUploadInput{Bucket: &s.bucket, Key: full, UploadId: up.UploadId})
	}
	return err
}

// ConfigFile is the object that marks a prefix of a bucket as holding a
// scrapbook.
const ConfigFile = "config"

// s3Config is the content of the config object.
type s3Config struct {
	// Format is s3Format.
	Format int `json:"sbuml_s3"`
}

const s3Format = 1

// beginWrites gets the remote ready to be written, once: it checks that
// the store honours conditional writes, makes the scrapbook if the
// prefix holds none, takes the push's lease, and only then lists the
// packs, so that the view includes what the last gc condemned if that
// gc could have missed this push (see GCS3).
func (s *S3) beginWrites(ctx context.Context) error {
	s.beginMu.Lock()
	defer s.beginMu.Unlock()
	s.mu.Lock()
	started := s.lease != nil
	s.mu.Unlock()
	if started {
		return nil
	}
	if err := s.checkConditional(ctx); err != nil {
		return err
	}
	if err := s.makeScrapbook(ctx); err != nil {
		return err
	}
	l, err := s.takeLease(ctx, "push")
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.lease = l
	s.mu.Unlock()
	_, err = s.loadView(ctx)
	return err
}

// hasScrapbook reports whether the prefix holds a scrapbook.
func (s *S3) hasScrapbook(ctx context.Context) (bool, error) {
	b, err := s.getObject(ctx, ConfigFile, 4096)
	if errors.Is(err, objects.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	var c s3Config
	if err := json.Unmarshal(b, &c); err != nil || c.Format != s3Format {
		return false, fmt.Errorf("remote %s: %s is not the config of an sbuml scrapbook of format %d", s.url, s.key(ConfigFile), s3Format)
	}
	return true, nil
}

// checkScrapbook checks, once, that the prefix holds a scrapbook.
func (s *S3) checkScrapbook(ctx context.Context) error {
	s.mu.Lock()
	known := s.known
	s.mu.Unlock()
	if known {
		return nil
	}
	ok, err := s.hasScrapbook(ctx)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("remote %s holds no sbuml scrapbook (no object %s); push to it to make one", s.url, s.key(ConfigFile))
	}
	s.mu.Lock()
	s.known = true
	s.mu.Unlock()
	return nil
}

// makeScrapbook makes an empty scrapbook under the prefix if it holds
// none: a HEAD naming refs/heads/main, then its config, each created
// only if absent, so that another host doing the same at the same time
// changes nothing.
func (s *S3) makeScrapbook(ctx context.Context) error {
	ok, err := s.hasScrapbook(ctx)
	if err != nil || ok {
		return err
	}
	cfg, _ := json.Marshal(s3Config{Format: s3Format})
	for _, f := range []struct {
		key  string
		data []byte
	}{{headFile, []byte("ref: refs/heads/main\n")}, {ConfigFile, append(cfg, '\n')}} {
		if err := s.putObject(ctx, f.key, f.data, putCond{ifNoneMatch: true}); err != nil && !errors.Is(err, errPrecondition) {
			return err
		}
	}
	s.mu.Lock()
	s.known = true
	s.mu.Unlock()
	return nil
}

// randomName returns a random hex string of 16 bytes.
func randomName() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
