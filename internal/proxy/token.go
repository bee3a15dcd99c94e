package proxy

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"strconv"
	"strings"
	"time"
)

// tokenVersion prefixes every token so the format (or the key) can change
// later without old tokens being misread.
const tokenVersion = "v1"

// MinKeyLen is the shortest Signer key New accepts: HMAC-SHA256 keys shorter
// than the hash give less than its strength.
const MinKeyLen = 32

// Signer makes and checks port tokens: "v1.<expiry unix>.<mac>" where mac is
// HMAC-SHA256 with Key over (sandbox id, port, expiry). The id and port are
// not in the token; they come from the URL being opened, so a token for one
// port or sandbox fails everywhere else. Tokens are URL-safe.
type Signer struct {
	// Key is the server secret, at least MinKeyLen bytes.
	Key []byte
	// Now is the clock; nil means time.Now. Tests inject a fake.
	Now func() time.Time
}

// Sign returns a token opening port on sandbox sandboxID until ttl from now
// (to the second).
func (s *Signer) Sign(sandboxID string, port int, ttl time.Duration) string {
	return s.signUntil(sandboxID, port, s.now().Add(ttl))
}

func (s *Signer) signUntil(sandboxID string, port int, exp time.Time) string {
	e := strconv.FormatInt(exp.Unix(), 10)
	return tokenVersion + "." + e + "." + base64.RawURLEncoding.EncodeToString(s.mac(sandboxID, port, e))
}

// Verify checks that token opens port on sandboxID now. It returns an error
// with code "invalid_token" for anything malformed, tampered or signed for
// another sandbox, port or key, and "token_expired" for a genuine token past
// its expiry. Both wrap sandbox.ErrForbidden.
func (s *Signer) Verify(token, sandboxID string, port int) error {
	_, err := s.VerifyExpiry(token, sandboxID, port)
	return err
}

// VerifyExpiry is Verify that also returns the expiry, so a cookie can be made to
// live no longer than the token that earned it.
func (s *Signer) VerifyExpiry(token, sandboxID string, port int) (time.Time, error) {
	ver, rest, ok1 := strings.Cut(token, ".")
	e, sig, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 || ver != tokenVersion {
		return time.Time{}, errInvalidToken
	}
	exp, err := strconv.ParseInt(e, 10, 64)
	// Only Sign's spelling of the expiry ("+5" or "05" would parse too):
	// with the strict MAC below, a token has one spelling.
	if err != nil || strconv.FormatInt(exp, 10) != e {
		return time.Time{}, errInvalidToken
	}
	// Strict: the last character of a 32-byte MAC carries two spare bits,
	// and a lenient decoder would take four spellings of one token.
	// And of the exact length: every decoder of encoding/base64, Strict
	// too, skips CR and LF, so "ab\ncd" would be a second spelling.
	if len(sig) != base64.RawURLEncoding.EncodedLen(sha256.Size) {
		return time.Time{}, errInvalidToken
	}
	got, err := base64.RawURLEncoding.Strict().DecodeString(sig)
	// The MAC is checked before the expiry so that a tampered expiry reads
	// as tampered, not as expired.
	if err != nil || !hmac.Equal(got, s.mac(sandboxID, port, e)) {
		return time.Time{}, errInvalidToken
	}
	expiry := time.Unix(exp, 0)
	if !s.now().Before(expiry) {
		return time.Time{}, errTokenExpired
	}
	return expiry, nil
}

func (s *Signer) mac(sandboxID string, port int, exp string) []byte {
	m := hmac.New(sha256.New, s.Key)
	// A purpose string keeps these MACs apart from any other use of the key;
	// NUL separators cannot occur in ids, ports or expiries, so no two
	// triples share a message.
	m.Write([]byte("paddock port token\x00" + sandboxID + "\x00" + strconv.Itoa(port) + "\x00" + exp))
	return m.Sum(nil)
}

func (s *Signer) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}
