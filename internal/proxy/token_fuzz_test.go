package proxy

import (
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// FuzzVerifyToken checks that Verify accepts only the tokens Sign makes for
// that sandbox and port, spelled the one way Sign spells them, and refuses
// everything else as invalid_token, or token_expired for a genuine token
// past its expiry.
func FuzzVerifyToken(f *testing.F) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	s := &Signer{Key: testKey, Now: func() time.Time { return now }}
	good := s.Sign("sb-abc", 3000, time.Minute)
	sig := good[strings.LastIndexByte(good, '.')+1:]
	exp := strconv.FormatInt(now.Add(time.Minute).Unix(), 10)
	// macFor signs an expiry spelled as given: only the key's holder can
	// make such a token, and Sign never spells an expiry that way.
	macFor := func(e string) string {
		return "v1." + e + "." + base64.RawURLEncoding.EncodeToString(s.mac("sb-abc", 3000, e))
	}
	for _, tok := range []string{
		good,
		s.Sign("sb-abc", 3000, -time.Minute),
		s.Sign("sb-abc", 3001, time.Minute),
		s.Sign("sb-abd", 3000, time.Minute),
		good[:len(good)-1] + "B",
		good + "=",
		good + ".",
		"v1." + exp + "." + sig + "AA",
		"v1.9999999999." + sig,
		"v2" + strings.TrimPrefix(good, "v1"),
		"v1.." + sig,
		"v1.123.***",
		"",
		"not-a-token",
		macFor("+" + exp),
		macFor("0" + exp),
		macFor(exp + "\x00"),
	} {
		f.Add(tok, "sb-abc", 3000)
	}
	f.Fuzz(func(t *testing.T, token, id string, port int) {
		err := s.Verify(token, id, port)
		if err == nil {
			// Accepted: so it has three dot-separated parts, the second an
			// expiry in the future, and it is what Sign makes of them.
			parts := strings.Split(token, ".")
			e, perr := strconv.ParseInt(parts[min(1, len(parts)-1)], 10, 64)
			if len(parts) != 3 || perr != nil || !time.Unix(e, 0).After(now) {
				t.Fatalf("Verify accepted %q: not a live v1 token", token)
			}
			if want := s.signUntil(id, port, time.Unix(e, 0)); token != want {
				t.Fatalf("Verify(%q, %q, %d) accepted a token Sign spells %q", token, id, port, want)
			}
			return
		}
		if !errors.Is(err, sandbox.ErrForbidden) {
			t.Fatalf("Verify(%q) = %v, not ErrForbidden", token, err)
		}
		switch code := sandbox.CodeOf(err); code {
		case "invalid_token":
		case "token_expired":
			// Only for what Sign made: a genuine token, past its time.
			e, _ := strconv.ParseInt(strings.Split(token, ".")[1], 10, 64)
			if token != s.signUntil(id, port, time.Unix(e, 0)) || time.Unix(e, 0).After(now) {
				t.Fatalf("Verify(%q) = token_expired for a token Sign did not make or that has not expired", token)
			}
		default:
			t.Fatalf("Verify(%q) = code %q", token, code)
		}
	})
}
