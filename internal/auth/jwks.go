package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// keyRefreshInterval is how often a token naming a key the server does not
// know may make it fetch the issuer's keys again. Anyone can send such a
// token: without a bound, every unauthenticated request would cost an
// outbound fetch (go-oidc's remote key set refetches on every unknown kid).
// Issuers publish a new key well before they sign with it, so a minute's
// wait after a rotation is the worst a real user meets.
const keyRefreshInterval = time.Minute

// maxJWKSBytes bounds the issuer's key set document.
const maxJWKSBytes = 1 << 20

// errUnknownKey: the token's key is not among the issuer's, even after a
// refresh (or a refresh was made too recently to try again).
var errUnknownKey = errors.New("the token is signed with a key the issuer does not publish")

// keySet verifies JWT signatures with an issuer's published keys (JWKS),
// fetched at first use and again when a token names an unknown key, at most
// once per keyRefreshInterval. It implements go-oidc's KeySet.
type keySet struct {
	url    string
	client *http.Client
	now    func() time.Time
	algs   []jose.SignatureAlgorithm

	refresh sync.Mutex // one fetch at a time; held across the fetch

	mu      sync.Mutex // guards keys and fetched
	keys    []jose.JSONWebKey
	fetched time.Time // zero before the first fetch
}

// VerifySignature returns the payload of raw if one of the issuer's keys
// signed it.
func (k *keySet) VerifySignature(ctx context.Context, raw string) ([]byte, error) {
	jws, err := jose.ParseSigned(raw, k.algs)
	if err != nil {
		return nil, fmt.Errorf("parse token: %w", err)
	}
	if len(jws.Signatures) != 1 {
		return nil, errors.New("the token must carry exactly one signature")
	}
	kid := jws.Signatures[0].Header.KeyID
	keys, fetched := k.cached()
	if payload, ok := verifyWith(jws, keys, kid); ok {
		return payload, nil
	}
	keys, err = k.refreshed(ctx, fetched)
	if err != nil {
		return nil, err
	}
	if payload, ok := verifyWith(jws, keys, kid); ok {
		return payload, nil
	}
	return nil, errUnknownKey
}

func (k *keySet) cached() ([]jose.JSONWebKey, time.Time) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.keys, k.fetched
}

// refreshed returns the key set as fetched after seen: by another caller
// meanwhile, or by this one when the last fetch is old enough.
func (k *keySet) refreshed(ctx context.Context, seen time.Time) ([]jose.JSONWebKey, error) {
	k.refresh.Lock()
	defer k.refresh.Unlock()
	keys, fetched := k.cached()
	switch {
	case fetched.After(seen):
		return keys, nil // someone refreshed while we waited
	case !fetched.IsZero() && k.now().Sub(fetched) < keyRefreshInterval:
		return nil, errUnknownKey
	}
	keys, err := k.fetch(context.WithoutCancel(ctx))
	k.mu.Lock()
	defer k.mu.Unlock()
	// A failed fetch counts too: an issuer that is down is not asked again
	// on every request.
	k.fetched = k.now()
	if err != nil {
		return nil, err
	}
	k.keys = keys
	return keys, nil
}

func (k *keySet) fetch(ctx context.Context) ([]jose.JSONWebKey, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.url, nil)
	if err != nil {
		return nil, fmt.Errorf("fetch the issuer's keys: %w", err)
	}
	resp, err := k.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch the issuer's keys: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch the issuer's keys: %s answered %s", k.url, resp.Status)
	}
	var set jose.JSONWebKeySet
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxJWKSBytes)).Decode(&set); err != nil {
		return nil, fmt.Errorf("fetch the issuer's keys: decode %s: %w", k.url, err)
	}
	return set.Keys, nil
}

// verifyWith tries the keys that kid names (every key when the token names
// none) and returns the payload of the first that verifies.
func verifyWith(jws *jose.JSONWebSignature, keys []jose.JSONWebKey, kid string) ([]byte, bool) {
	for _, key := range keys {
		if kid != "" && key.KeyID != kid {
			continue
		}
		if key.Use != "" && key.Use != "sig" {
			continue
		}
		if payload, err := jws.Verify(key); err == nil {
			return payload, true
		}
	}
	return nil, false
}
