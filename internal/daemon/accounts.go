package daemon

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/paddock-dev/paddock/internal/auth"
	"github.com/paddock-dev/paddock/internal/server"
	"github.com/paddock-dev/paddock/internal/store"
)

// storeFile is the control plane's SQLite database under the data dir.
const storeFile = "paddock.db"

// startAuth sets up authentication over st, adopts the tokens of the file
// store paddock used before teams (tokens.json, renamed once imported), and
// makes the host admin token on first start or with reset: then its secret
// is returned, with created true.
func startAuth(ctx context.Context, st store.Store, dataDir string, oidc *auth.OIDCConfig, reset bool, log *slog.Logger) (a *auth.Authenticator, secret string, created bool, err error) {
	a, err = auth.New(ctx, auth.Config{Store: st, OIDC: oidc, Logger: log})
	if err != nil {
		return nil, "", false, fmt.Errorf("set up authentication: %w", err)
	}
	if err := importFileTokens(ctx, a, dataDir, log); err != nil {
		return nil, "", false, err
	}
	if reset {
		secret, err := a.ResetAdminToken(ctx)
		if err != nil {
			return nil, "", false, err
		}
		return a, secret, true, nil
	}
	secret, created, err = a.Bootstrap(ctx)
	if err != nil {
		return nil, "", false, fmt.Errorf("create the admin token: %w", err)
	}
	return a, secret, created, nil
}

// importFileTokens moves tokens.json's hashes into the store as host admin
// tokens, then renames the file so that a token revoked later is not
// imported again on the next start.
func importFileTokens(ctx context.Context, a *auth.Authenticator, dataDir string, log *slog.Logger) error {
	path := filepath.Join(dataDir, "tokens.json")
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	fts, err := server.OpenFileTokenStore(dataDir)
	if err != nil {
		return err
	}
	for _, t := range fts.List() {
		hash, err := hex.DecodeString(t.Hash)
		if err != nil {
			return fmt.Errorf("import %s: token %q: %w", path, t.Name, err)
		}
		if err := a.ImportHostAdminToken(ctx, t.Name, hash, t.CreatedAt); err != nil {
			return fmt.Errorf("import %s: %w", path, err)
		}
	}
	if err := os.Rename(path, path+".imported"); err != nil {
		return fmt.Errorf("import %s: %w", path, err)
	}
	log.Info("imported the token file into the store", "tokens", len(fts.List()), "file", path+".imported")
	return nil
}
