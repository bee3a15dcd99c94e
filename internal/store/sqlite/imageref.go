package sqlite

import (
	"context"
	"database/sql"
	"errors"

	"github.com/paddock-dev/paddock/internal/store"
)

const imageRefCols = `scope, ref, digest, source, platform, insecure, keychain, replica, updated_at`

func scanImageRef(r scanner) (store.ImageRef, error) {
	var ir store.ImageRef
	err := r.Scan(&ir.Scope, &ir.Ref, &ir.Digest, &ir.Source, &ir.Platform, &ir.Insecure, &ir.Keychain, &ir.Replica, tm{&ir.UpdatedAt})
	return ir, err
}

func (s *Store) PutImageRef(ctx context.Context, r store.ImageRef) error {
	if r.Ref == "" || r.Digest == "" {
		return store.Invalid("an image ref needs a ref and a digest")
	}
	_, err := s.w.ExecContext(ctx, `INSERT INTO image_refs (`+imageRefCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (scope, ref) DO UPDATE SET digest = excluded.digest, source = excluded.source,
			platform = excluded.platform, insecure = excluded.insecure, keychain = excluded.keychain,
			replica = excluded.replica, updated_at = excluded.updated_at`,
		r.Scope, r.Ref, r.Digest, r.Source, r.Platform, r.Insecure, r.Keychain, r.Replica, ms(r.UpdatedAt))
	if err != nil {
		return wrap("put image ref", err)
	}
	return nil
}

func (s *Store) GetImageRef(ctx context.Context, scope, ref string) (store.ImageRef, error) {
	ir, err := scanImageRef(s.r.QueryRowContext(ctx, `SELECT `+imageRefCols+` FROM image_refs WHERE scope = ? AND ref = ?`, scope, ref))
	if errors.Is(err, sql.ErrNoRows) {
		return store.ImageRef{}, store.NotFound("image_ref", ref)
	}
	if err != nil {
		return store.ImageRef{}, wrap("get image ref", err)
	}
	return ir, nil
}

func (s *Store) DeleteImageRef(ctx context.Context, scope, ref, digest string) (bool, error) {
	res, err := s.w.ExecContext(ctx, `DELETE FROM image_refs WHERE scope = ? AND ref = ? AND (? = '' OR digest = ?)`,
		scope, ref, digest, digest)
	if err != nil {
		return false, wrap("delete image ref", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, wrap("delete image ref", err)
	}
	return n > 0, nil
}

func (s *Store) CountImageRefs(ctx context.Context, scope string) (int, error) {
	var n int
	if err := s.r.QueryRowContext(ctx, `SELECT COUNT(*) FROM image_refs WHERE scope = ?`, scope).Scan(&n); err != nil {
		return 0, wrap("count image refs", err)
	}
	return n, nil
}
