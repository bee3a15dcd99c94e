package server

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// TokenStore authenticates API tokens. It is the whole of what the server
// needs, so a database-backed store (projects) can replace the file store
// without touching the handlers.
type TokenStore interface {
	// Authenticate returns the token whose secret is given, or an error
	// wrapping sandbox.ErrUnauthorized.
	Authenticate(ctx context.Context, secret string) (Token, error)
}

// Token is what is known of a token at rest: never its secret.
type Token struct {
	Name      string    `json:"name"`
	Hash      string    `json:"hash"` // hex SHA-256 of the secret
	CreatedAt time.Time `json:"createdAt"`
}

// AdminTokenName is the name of the token EnsureAdminToken creates.
const AdminTokenName = "admin"

// tokenPrefix marks paddock tokens so they are recognisable in leaks and logs.
const tokenPrefix = "pdk_"

func hashSecret(secret string) []byte {
	sum := sha256.Sum256([]byte(secret))
	return sum[:]
}

// FileTokenStore keeps token hashes in DataDir/tokens.json (mode 0600,
// written atomically). It suits one host; secrets are never stored.
type FileTokenStore struct {
	path string
	now  func() time.Time

	mu     sync.Mutex // guards tokens and the file
	tokens []Token
}

var _ TokenStore = (*FileTokenStore)(nil)

type tokenFile struct {
	Tokens []Token `json:"tokens"`
}

// OpenFileTokenStore loads dataDir/tokens.json, or starts empty if it does not exist yet.
func OpenFileTokenStore(dataDir string) (*FileTokenStore, error) {
	s := &FileTokenStore{path: filepath.Join(dataDir, "tokens.json"), now: time.Now}
	data, err := os.ReadFile(s.path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return s, nil
	case err != nil:
		return nil, fmt.Errorf("read token store: %w", err)
	}
	var f tokenFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("parse token store %s: %w", s.path, err)
	}
	s.tokens = f.Tokens
	return s, nil
}

// Authenticate compares the secret's hash with every stored hash in
// constant time, and does not stop at a match, so timing reveals nothing.
func (s *FileTokenStore) Authenticate(_ context.Context, secret string) (Token, error) {
	h := hashSecret(secret)
	s.mu.Lock()
	defer s.mu.Unlock()
	found, match := -1, 0
	for i, t := range s.tokens {
		stored, err := hex.DecodeString(t.Hash)
		if err != nil || len(stored) != len(h) {
			continue
		}
		if subtle.ConstantTimeCompare(stored, h) == 1 && match == 0 {
			found, match = i, 1
		}
	}
	if found < 0 {
		return Token{}, errInvalidToken
	}
	return s.tokens[found], nil
}

// Create makes a new token and returns its secret, which exists only in
// the answer: the store keeps its hash.
func (s *FileTokenStore) Create(name string) (string, Token, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.createLocked(name)
}

func (s *FileTokenStore) createLocked(name string) (string, Token, error) {
	if name == "" {
		return "", Token{}, sandbox.Errorf(sandbox.ErrInvalid, "invalid_name", "token name is empty")
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", Token{}, fmt.Errorf("generate token: %w", err)
	}
	secret := tokenPrefix + base64.RawURLEncoding.EncodeToString(raw[:])
	t := Token{Name: name, Hash: hex.EncodeToString(hashSecret(secret)), CreatedAt: s.now().UTC()}
	next := append(append([]Token(nil), s.tokens...), t)
	if err := s.save(next); err != nil {
		return "", Token{}, err
	}
	s.tokens = next
	return secret, t, nil
}

// List returns the stored tokens (hashes only).
func (s *FileTokenStore) List() []Token {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Token(nil), s.tokens...)
}

// EnsureAdminToken creates the admin token if the store has none and
// returns its secret; on later calls it returns "" and created false, since
// the secret cannot be recovered from its hash.
func (s *FileTokenStore) EnsureAdminToken() (secret string, created bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range s.tokens {
		if t.Name == AdminTokenName {
			return "", false, nil
		}
	}
	secret, _, err = s.createLocked(AdminTokenName)
	if err != nil {
		return "", false, err
	}
	return secret, true, nil
}

// save writes the file atomically: a temp file in the same directory,
// fsynced, renamed over the old one, so a crash leaves the old or the new
// file, never half of one.
func (s *FileTokenStore) save(tokens []Token) error {
	data, err := json.MarshalIndent(tokenFile{Tokens: tokens}, "", "  ")
	if err != nil {
		return fmt.Errorf("encode token store: %w", err)
	}
	dir := filepath.Dir(s.path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create token store dir: %w", err)
	}
	f, err := os.CreateTemp(dir, ".tokens-*.json")
	if err != nil {
		return fmt.Errorf("write token store: %w", err)
	}
	defer os.Remove(f.Name()) // no-op after the rename
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return fmt.Errorf("write token store: %w", err)
	}
	if _, err := f.Write(append(data, '\n')); err != nil {
		f.Close()
		return fmt.Errorf("write token store: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("write token store: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write token store: %w", err)
	}
	if err := os.Rename(f.Name(), s.path); err != nil {
		return fmt.Errorf("write token store: %w", err)
	}
	return nil
}

// authenticate is the one auth check: every /api/v1 request carries a
// valid bearer token. It runs before routing so that nothing about the API's
// shape leaks to anonymous callers.
func (s *Server) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != api.Prefix && !strings.HasPrefix(r.URL.Path, api.Prefix+"/") {
			next.ServeHTTP(w, r)
			return
		}
		h := r.Header.Get("Authorization")
		scheme, secret, ok := strings.Cut(h, " ")
		secret = strings.TrimSpace(secret)
		if h == "" || !ok || !strings.EqualFold(scheme, "Bearer") || secret == "" {
			s.writeError(w, r, errUnauthenticated)
			return
		}
		if _, err := s.tokens.Authenticate(r.Context(), secret); err != nil {
			if !errors.Is(err, sandbox.ErrUnauthorized) {
				s.writeError(w, r, fmt.Errorf("authenticate: %w", err))
				return
			}
			s.writeError(w, r, errInvalidToken)
			return
		}
		next.ServeHTTP(w, r)
	})
}
