package transport

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"syscall"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/smithy-go"
)

// s3Status returns the HTTP status and the S3 error code of err, if it
// is an answer of the store.
func s3Status(err error) (int, string) {
	status, code := 0, ""
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		status = re.HTTPStatusCode()
	}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		code = ae.ErrorCode()
	}
	return status, code
}

// isS3NotFound reports whether err says that the key does not exist.
func isS3NotFound(err error) bool {
	status, code := s3Status(err)
	return code == "NoSuchKey" || code == "NotFound" || (status == http.StatusNotFound && code != "NoSuchBucket")
}

// isS3Precondition reports whether err is the refusal of a conditional
// write: the object is not (or no longer) as the condition says.
func isS3Precondition(err error) bool {
	status, code := s3Status(err)
	return status == http.StatusPreconditionFailed || code == "PreconditionFailed" || code == "ConditionalRequestConflict"
}

// isS3NotImplemented reports whether err says the store does not
// implement what was asked.
func isS3NotImplemented(err error) bool {
	status, code := s3Status(err)
	return status == http.StatusNotImplemented || code == "NotImplemented"
}

// s3Err is an error of the S3 API explained in one line; it wraps the
// SDK's error.
type s3Err struct {
	msg string
	err error
}

func (e *s3Err) Error() string { return e.msg }
func (e *s3Err) Unwrap() error { return e.err }

// explainS3 turns an error of the S3 API into words a user can act on.
func explainS3(bucket string, err error) error {
	status, code := s3Status(err)
	msg := ""
	var ae smithy.APIError
	if errors.As(err, &ae) {
		msg = ae.ErrorMessage()
	}
	switch {
	case code == "NoSuchBucket":
		return fmt.Errorf("bucket %s does not exist; create it first (aws s3 mb s3://%s)", bucket, bucket)
	case code == "InvalidAccessKeyId" || code == "SignatureDoesNotMatch" || code == "ExpiredToken" ||
		code == "InvalidToken" || code == "AccessDenied" || status == http.StatusForbidden:
		return fmt.Errorf("access denied (%s: %s); check the credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN or AWS_PROFILE) and what they may do in bucket %s",
			orStatus(code, status), oneLine(msg), bucket)
	case code == "SlowDown" || status == http.StatusServiceUnavailable || status == http.StatusTooManyRequests:
		return fmt.Errorf("the store is throttling requests (%s) and still was after every retry; try again later", orStatus(code, status))
	case status != 0:
		if msg == "" {
			msg = http.StatusText(status)
		}
		return fmt.Errorf("%s: %s", orStatus(code, status), oneLine(msg))
	}
	s := err.Error()
	switch {
	case strings.Contains(s, "failed to retrieve credentials") || strings.Contains(s, "no EC2 IMDS role found"):
		return errors.New("no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE naming a profile of ~/.aws/credentials")
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("cannot reach the store: connection refused (is the endpoint right? set it with AWS_ENDPOINT_URL or 'sbuml remote add --endpoint')")
	}
	var timeout *timeoutError
	if errors.As(err, &timeout) {
		return timeout
	}
	// The SDK's own words, without its "operation error S3: Op," prefix.
	if i := strings.LastIndex(s, ", "); strings.HasPrefix(s, "operation error") && i >= 0 {
		s = s[i+2:]
	}
	return errors.New(oneLine(s))
}

func orStatus(code string, status int) string {
	if code != "" {
		return code
	}
	return fmt.Sprintf("HTTP %d", status)
}

// oneLine joins the lines of s.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
