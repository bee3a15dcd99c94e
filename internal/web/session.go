package web

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"
)

// A session is the API token itself (or, signed in with the OIDC issuer,
// its ID token), sealed (AES-256-GCM) into the
// cookie with a key derived from paddock's secrets key. Nothing is kept
// on the server: sessions survive a restart and need no store or sweeper,
// and revocation still works because every request authenticates the
// token again through the API's authenticator.
const (
	sessionCookie = "paddock_session"
	// sessionTTL bounds a cookie even when its token lives longer.
	sessionTTL = 12 * time.Hour
)

// session is what a session cookie carries.
type session struct {
	Token   string `json:"t"`
	Nonce   []byte `json:"n"` // the CSRF token is derived from it
	Expires int64  `json:"e"` // unix seconds
}

// sealer seals and opens session cookies and derives CSRF tokens.
type sealer struct {
	aead    cipher.AEAD
	csrfKey []byte
}

func newSealer(secret []byte) (*sealer, error) {
	if len(secret) < 16 {
		return nil, errors.New("web: the secrets key is shorter than 16 bytes")
	}
	encKey, err := hkdf.Key(sha256.New, secret, nil, "paddock dashboard session", 32)
	if err != nil {
		return nil, fmt.Errorf("web: derive the session key: %w", err)
	}
	csrfKey, err := hkdf.Key(sha256.New, secret, nil, "paddock dashboard csrf", 32)
	if err != nil {
		return nil, fmt.Errorf("web: derive the CSRF key: %w", err)
	}
	block, err := aes.NewCipher(encKey)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &sealer{aead: aead, csrfKey: csrfKey}, nil
}

// seal returns the cookie value of s.
func (k *sealer) seal(s session) (string, error) { return k.sealJSON(s, sessionCookie) }

// open returns the session in a cookie value, if it is sealed by this key
// and not expired.
func (k *sealer) open(value string, now time.Time) (session, bool) {
	var s session
	if !k.openJSON(value, sessionCookie, &s) || s.Token == "" || len(s.Nonce) == 0 || now.Unix() >= s.Expires {
		return session{}, false
	}
	return s, true
}

// sealJSON seals v for the cookie named name; the name is the additional
// data, so one cookie's value is never accepted as another's.
func (k *sealer) sealJSON(v any, name string) (string, error) {
	plain, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	nonce := make([]byte, k.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(k.aead.Seal(nonce, nonce, plain, []byte(name))), nil
}

// openJSON opens a value sealJSON made for the cookie named name into v.
func (k *sealer) openJSON(value, name string, v any) bool {
	raw, err := base64.RawURLEncoding.DecodeString(value)
	if err != nil || len(raw) < k.aead.NonceSize() {
		return false
	}
	plain, err := k.aead.Open(nil, raw[:k.aead.NonceSize()], raw[k.aead.NonceSize():], []byte(name))
	return err == nil && json.Unmarshal(plain, v) == nil
}

// csrf is the token forms and scripts send back with every POST of s.
func (k *sealer) csrf(s session) string {
	m := hmac.New(sha256.New, k.csrfKey)
	m.Write(s.Nonce)
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// checkCSRF reports whether got is s's CSRF token.
func (k *sealer) checkCSRF(s session, got string) bool {
	return got != "" && hmac.Equal([]byte(got), []byte(k.csrf(s)))
}

// newSession starts a session for token.
func newSession(token string, now time.Time) (session, error) {
	nonce := make([]byte, 16)
	if _, err := rand.Read(nonce); err != nil {
		return session{}, err
	}
	return session{Token: token, Nonce: nonce, Expires: now.Add(sessionTTL).Unix()}, nil
}

// sessionCookieOf builds the cookie that holds value; an empty value and
// maxAge < 0 clear it.
func sessionCookieOf(value string, maxAge int, secure bool) *http.Cookie {
	return &http.Cookie{Name: sessionCookie, Value: value, Path: "/", MaxAge: maxAge,
		HttpOnly: true, Secure: secure, SameSite: http.SameSiteStrictMode}
}
