package proxy

import (
	"encoding/base64"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/fake"
	"github.com/paddock-dev/paddock/internal/sandbox"

	"github.com/paddock-dev/paddock/internal/proxy/proxytest"
)

var testKey = proxytest.Key

func TestSigner(t *testing.T) {
	start := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	clock := fake.NewClock(start)
	s := &Signer{Key: testKey, Now: clock.Now}
	good := s.Sign("sb-abc", 3000, time.Minute)
	sig := good[strings.LastIndexByte(good, '.')+1:]
	flipped := good[:len(good)-1] + map[bool]string{true: "B", false: "A"}[strings.HasSuffix(good, "A")]
	tests := []struct {
		name     string
		token    string
		id       string
		port     int
		advance  time.Duration
		wantCode string // "" for valid
	}{
		{"valid", good, "sb-abc", 3000, 0, ""},
		{"valid just before expiry", good, "sb-abc", 3000, 59 * time.Second, ""},
		{"expired at expiry", good, "sb-abc", 3000, time.Minute, "token_expired"},
		{"expired later", good, "sb-abc", 3000, time.Hour, "token_expired"},
		{"wrong port", good, "sb-abc", 3001, 0, "invalid_token"},
		{"wrong sandbox", good, "sb-abd", 3000, 0, "invalid_token"},
		{"tampered signature", flipped, "sb-abc", 3000, 0, "invalid_token"},
		{"tampered expiry", "v1.9999999999." + sig, "sb-abc", 3000, 0, "invalid_token"},
		{"other key", (&Signer{Key: []byte(strings.Repeat("k", 32)), Now: clock.Now}).Sign("sb-abc", 3000, time.Minute), "sb-abc", 3000, 0, "invalid_token"},
		{"other version", "v2" + strings.TrimPrefix(good, "v1"), "sb-abc", 3000, 0, "invalid_token"},
		{"empty", "", "sb-abc", 3000, 0, "invalid_token"},
		{"garbage", "not-a-token", "sb-abc", 3000, 0, "invalid_token"},
		{"bad base64", "v1.123.***", "sb-abc", 3000, 0, "invalid_token"},
		// Signed with the key, so only its holder could make them: Sign
		// never spells an expiry this way.
		{"expiry with a sign", nonCanonical(s, "+"), "sb-abc", 3000, 0, "invalid_token"},
		{"expiry with a leading zero", nonCanonical(s, "0"), "sb-abc", 3000, 0, "invalid_token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock.Set(start.Add(tt.advance))
			err := s.Verify(tt.token, tt.id, tt.port)
			if tt.wantCode == "" {
				if err != nil {
					t.Fatalf("Verify = %v, want nil", err)
				}
				return
			}
			if got := sandbox.CodeOf(err); got != tt.wantCode || !errors.Is(err, sandbox.ErrForbidden) {
				t.Fatalf("Verify = %v (code %q), want code %q wrapping ErrForbidden", err, got, tt.wantCode)
			}
		})
	}
	// One token has one spelling: the MAC's last base64 character carries
	// two spare bits, and each other character there is refused.
	clock.Set(start)
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	for _, c := range alphabet {
		other := good[:len(good)-1] + string(c)
		if other != good && s.Verify(other, "sb-abc", 3000) == nil {
			t.Errorf("a token ending in %q instead of %q is accepted", c, good[len(good)-1:])
		}
	}
}

// nonCanonical is a valid token for sb-abc:3000 whose expiry, a minute
// from now, is written with prefix in front.
func nonCanonical(s *Signer, prefix string) string {
	e := prefix + strconv.FormatInt(s.now().Add(time.Minute).Unix(), 10)
	return tokenVersion + "." + e + "." + base64.RawURLEncoding.EncodeToString(s.mac("sb-abc", 3000, e))
}

func TestStatusOf(t *testing.T) {
	tests := []struct {
		name       string
		err        error
		wantStatus int
		wantCode   string
	}{
		{"unauthenticated", errUnauthenticated, http.StatusUnauthorized, "unauthenticated"},
		{"expired", errTokenExpired, http.StatusForbidden, "token_expired"},
		{"invalid", errInvalidToken, http.StatusForbidden, "invalid_token"},
		// The proxy raises a stopped sandbox as the upstream's failure (503).
		{"not running", sandbox.Errorf(sandbox.ErrUnavailable, "sandbox_not_running", "x"), http.StatusServiceUnavailable, "sandbox_not_running"},
		{"refused", sandbox.Errorf(ErrBadGateway, "port_not_listening", "x"), http.StatusBadGateway, "port_not_listening"},
		{"timeout", sandbox.Errorf(ErrGatewayTimeout, "upstream_timeout", "x"), http.StatusGatewayTimeout, "upstream_timeout"},
		{"not found kind only", sandbox.ErrNotFound, http.StatusNotFound, "not_found"},
		{"unavailable", sandbox.ErrUnavailable, http.StatusServiceUnavailable, "unavailable"},
		{"plain error", errors.New("boom"), http.StatusInternalServerError, "internal"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, code := StatusOf(tt.err)
			if status != tt.wantStatus || code != tt.wantCode {
				t.Errorf("StatusOf(%v) = %d %q, want %d %q", tt.err, status, code, tt.wantStatus, tt.wantCode)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	signer := &Signer{Key: testKey}
	res := &fakeResolver{}
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"ok", Config{Domain: "localhost", Signer: signer, Resolver: res}, true},
		{"no domain is path-only", Config{Signer: signer, Resolver: res}, true},
		{"no signer", Config{Resolver: res}, false},
		{"short key", Config{Signer: &Signer{Key: []byte("short")}, Resolver: res}, false},
		{"no resolver", Config{Signer: signer}, false},
		{"domain with port", Config{Domain: "localhost:7420", Signer: signer, Resolver: res}, false},
		{"domain with scheme", Config{Domain: "https://x", Signer: signer, Resolver: res}, false},
		{"negative timeout", Config{Signer: signer, Resolver: res, IdleTimeout: -1}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg)
			if (err == nil) != tt.ok || (err != nil && !errors.Is(err, sandbox.ErrInvalid)) {
				t.Errorf("New = %v, want ok=%v (errors wrapping ErrInvalid)", err, tt.ok)
			}
		})
	}
}
