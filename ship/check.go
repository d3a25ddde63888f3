package ship

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// CheckURL validates a destination URL (output.url, dead_letter_url,
// jobs.store, metering.state_url) with ParseURL, the parser that later
// opens it, so `check` rejects exactly what start-up would; the commonest
// mistakes get a short message of their own. The message names no key
// (callers do) and says what is accepted.
func CheckURL(raw string) error {
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return fmt.Errorf("%q is not a URL: %w", raw, err)
	case u.Scheme == "":
		return fmt.Errorf("%q has no scheme; use s3:// or file://", raw)
	case u.Scheme != SchemeS3 && u.Scheme != SchemeFile:
		return fmt.Errorf("scheme %q not supported; use s3:// or file://", u.Scheme)
	case u.Scheme == SchemeS3 && u.Host == "":
		return fmt.Errorf("%q has no bucket; use s3://bucket/prefix", raw)
	}
	if _, err := ParseURL(raw); err != nil {
		return errors.New(strings.TrimPrefix(err.Error(), ErrURL.Error()+" "))
	}
	return nil
}

// CheckKeyFormat validates an object key format the way the encoder
// compiles it.
func CheckKeyFormat(format string) error {
	if _, err := CompileKeyFormat("", format, "host"); err != nil {
		return errors.New(strings.TrimPrefix(err.Error(), ErrKeyFormat.Error()+" "))
	}
	return nil
}
