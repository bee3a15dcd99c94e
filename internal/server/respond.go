package server

import (
	"time"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// toAPIList converts store records for a list answer. The result is never
// nil, so an empty list goes out as [] rather than null: clients iterate it
// without a nil check.
func toAPIList[T, U any](in []T, convert func(T) U) []U {
	out := make([]U, 0, len(in))
	for _, v := range in {
		out = append(out, convert(v))
	}
	return out
}

// signedURLTTL is the lifetime a signed-URL request asks for, 0 meaning
// the default. Too long is refused rather than cut, so that a client never
// holds a URL that dies sooner than it was told.
func signedURLTTL(seconds int64) (time.Duration, error) {
	maxSeconds := int64(maxSignedURLTTL / time.Second)
	switch {
	case seconds < 0 || seconds > maxSeconds:
		return 0, sandbox.Errorf(sandbox.ErrInvalid, "invalid_ttl", "ttlSeconds must be in [1, %d], got %d", maxSeconds, seconds)
	case seconds == 0:
		return defaultSignedURLTTL, nil
	}
	return time.Duration(seconds) * time.Second, nil
}
