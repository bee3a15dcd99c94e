package source

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-git/go-billy/v5/osfs"
	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/format/index"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	"github.com/go-git/go-git/v5/storage/filesystem"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// A git source becomes a real repository in the sandbox: the working tree
// of the revision plus a .git directory holding what was fetched (shallow
// when Depth > 0), its refs, an index matching the tree, and origin without
// credentials, so git log, status and fetch work there.
//
// Nothing is checked out on the host. The fetch fills a bare store in a
// temp dir (go-git's filesystem bound to it: a hostile ref name cannot
// write outside), the tree is read from the object store and streamed, with
// every tree entry name validated on its own (no "", ".", "..", "/", NUL,
// or ".git" in any case), so a hostile repository's symlinks never exist on
// the host at all.

const remoteName = "origin"

// gitEntry is one path of the tree being streamed.
type gitEntry struct {
	name string
	mode filemode.FileMode
	hash plumbing.Hash
	size int64
	link string // a symlink's target
}

// gitPlan is how a revision is fetched and checked out.
type gitPlan struct {
	specs  []config.RefSpec
	ref    plumbing.ReferenceName // the local ref holding the fetched revision
	branch string                 // check out this branch (else HEAD is detached)
	hash   plumbing.Hash          // the commit asked for by full sha, if any
	short  string                 // an abbreviated sha: resolved after a full fetch
	full   bool                   // fetch every branch and tag, whole history
	temp   bool                   // ref is paddock's own, removed after the fetch
}

// Compiled on first use, not at init: every paddock process starts with
// it, including each sandbox's runc init.
var hexRev = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[0-9a-f]{4,40}$`) })

func (f *Fetcher) fetchGit(ctx context.Context, src sandbox.Source, u *url.URL) (io.ReadCloser, *sandbox.SourceInfo, error) {
	if u.Scheme == "file" && !f.cfg.AllowFile {
		return nil, nil, sandbox.Errorf(sandbox.ErrForbidden, "source_scheme_forbidden", "file:// sources are disabled on this server")
	}
	if src.StripComponents != 0 {
		return nil, nil, invalidf(CodeInvalid, "stripComponents applies to tarball sources only")
	}
	if len(src.Revision) > 256 || strings.ContainsAny(src.Revision, "\x00\n") || strings.HasPrefix(src.Revision, "-") {
		return nil, nil, invalidf(CodeInvalid, "revision %q is not a valid branch, tag or commit", src.Revision)
	}
	auth, err := gitAuth(src, u)
	if err != nil {
		return nil, nil, err
	}
	clean := Redact(u)
	tmp, err := os.MkdirTemp(f.cfg.TempDir, "paddock-git-")
	if err != nil {
		return nil, nil, fmt.Errorf("source: temp dir: %w", err)
	}
	st := filesystem.NewStorage(osfs.New(tmp, osfs.WithBoundOS()), cache.NewObjectLRUDefault())
	release := func() {
		st.Close()
		os.RemoveAll(tmp)
	}
	commit, entries, err := f.gitFetch(ctx, st, clean, auth, src, u)
	if err != nil {
		release()
		return nil, nil, err
	}
	info := &sandbox.SourceInfo{Type: sandbox.SourceGit, URL: clean, Revision: src.Revision, Commit: commit.String()}
	mtime := time.Now().Truncate(time.Second)
	rc := pipeStream(func(w *tarWriter) error {
		return f.gitTar(st, tmp, entries, mtime, w)
	}, release)
	return rc, info, nil
}

// gitAuth builds HTTP basic auth: a token is the password (with the given
// username, else "x-access-token", which GitHub, Gitea and most servers
// accept; GitLab takes any username with a personal access token).
func gitAuth(src sandbox.Source, u *url.URL) (transport.AuthMethod, error) {
	user, pass := src.Username, src.Password
	switch {
	case src.Token != "":
		pass = src.Token
		if user == "" {
			user = "x-access-token"
		}
	case user == "" && pass == "" && u.User != nil:
		user = u.User.Username()
		pass, _ = u.User.Password()
	}
	if user == "" && pass == "" {
		return nil, nil
	}
	if u.Scheme == "file" {
		return nil, invalidf(CodeInvalid, "credentials apply to http(s) sources only")
	}
	return &githttp.BasicAuth{Username: user, Password: pass}, nil
}

// gitFetch fetches the revision into st, sets up refs, config and index as
// a fresh clone would, and returns the commit and its tree's entries.
func (f *Fetcher) gitFetch(ctx context.Context, st *filesystem.Storage, clean string, auth transport.AuthMethod, src sandbox.Source, u *url.URL) (plumbing.Hash, []gitEntry, error) {
	host := u.Hostname()
	if u.Scheme == "file" {
		host = "file://"
	}
	ctx, cancel := context.WithTimeout(ctx, f.cfg.Timeout)
	defer cancel()
	ctx = withFetch(ctx, f.http, f.cfg.MaxBytes)
	fail := func(err error) (plumbing.Hash, []gitEntry, error) {
		return plumbing.ZeroHash, nil, gitError(ctx, host, auth != nil, err)
	}
	repo, err := git.Init(st, nil)
	if err != nil {
		return plumbing.ZeroHash, nil, fmt.Errorf("source: init repository: %w", err)
	}
	remote, err := repo.CreateRemote(&config.RemoteConfig{Name: remoteName, URLs: []string{clean}})
	if err != nil {
		return plumbing.ZeroHash, nil, fmt.Errorf("source: add remote: %w", err)
	}
	refs, err := remote.ListContext(ctx, &git.ListOptions{Auth: auth, PeelingOption: git.AppendPeeled})
	if err != nil {
		return fail(err)
	}
	plan, err := planRevision(refs, src.Revision)
	if err != nil {
		return plumbing.ZeroHash, nil, err
	}
	depth := src.Depth
	switch {
	case depth == 0:
		depth = 1
	case depth < 0:
		depth = 0
	}
	if !plan.full {
		err = remote.FetchContext(ctx, &git.FetchOptions{RefSpecs: plan.specs, Depth: depth, Auth: auth, Tags: git.NoTags, Force: true})
		if errors.Is(err, git.ErrExactSHA1NotSupported) {
			// The server will not send a commit by sha unless it is a
			// ref's tip: fetch all history and find it there.
			f.cfg.Logger.Info("git source: the server refuses to send a commit by sha; fetching all history", "host", host)
			plan = gitPlan{full: true, hash: plan.hash}
		} else if err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) {
			return fail(err)
		}
	}
	if plan.full {
		specs := []config.RefSpec{"+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*"}
		err = remote.FetchContext(ctx, &git.FetchOptions{RefSpecs: specs, Auth: auth, Tags: git.NoTags, Force: true})
		if err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) {
			return fail(err)
		}
	}
	commit, err := resolveCommit(repo, plan, src.Revision)
	if err != nil {
		return plumbing.ZeroHash, nil, err
	}
	if plan.temp {
		_ = st.RemoveReference(plan.ref)
	}
	if err := setupClone(repo, st, plan, commit.Hash); err != nil {
		return plumbing.ZeroHash, nil, err
	}
	entries, err := f.treeEntries(st, commit)
	if err != nil {
		return plumbing.ZeroHash, nil, err
	}
	return commit.Hash, entries, nil
}

// gitError maps go-git's failures to API errors.
func gitError(ctx context.Context, host string, withAuth bool, err error) error {
	switch {
	case errors.Is(err, transport.ErrAuthenticationRequired), errors.Is(err, transport.ErrAuthorizationFailed):
		if withAuth {
			return sandbox.Errorf(sandbox.ErrInvalid, CodeAuthFailed, "the git server %s refused the source's credentials (or the repository does not exist)", host)
		}
		return sandbox.Errorf(sandbox.ErrInvalid, CodeAuthFailed, "the git server %s needs credentials for this repository (give username and password, or a token)", host)
	case errors.Is(err, transport.ErrRepositoryNotFound):
		return sandbox.Errorf(sandbox.ErrInvalid, CodeNotFound, "the git server %s has no such repository", host)
	case errors.Is(err, transport.ErrEmptyRemoteRepository):
		return sandbox.Errorf(sandbox.ErrInvalid, CodeEmpty, "the git repository on %s is empty", host)
	}
	return networkError(ctx, host, err)
}

// planRevision picks what to fetch for rev from the advertised refs: the
// remote HEAD's branch for "", a branch, a tag, a full ref name, or a
// commit sha (a ref's tip, else fetched by sha when the server allows it,
// else found after fetching all history).
func planRevision(refs []*plumbing.Reference, rev string) (gitPlan, error) {
	byName := map[plumbing.ReferenceName]*plumbing.Reference{}
	for _, r := range refs {
		byName[r.Name()] = r
	}
	branch := func(name plumbing.ReferenceName) (gitPlan, error) {
		if err := name.Validate(); err != nil {
			return gitPlan{}, invalidf(CodeInvalid, "the server advertises an invalid branch name %q", name)
		}
		b := name.Short()
		dst := plumbing.NewRemoteReferenceName(remoteName, b)
		return gitPlan{specs: []config.RefSpec{config.RefSpec("+" + name.String() + ":" + dst.String())}, ref: dst, branch: b}, nil
	}
	exact := func(name plumbing.ReferenceName) (gitPlan, error) {
		if err := name.Validate(); err != nil {
			return gitPlan{}, invalidf(CodeInvalid, "the server advertises an invalid ref name %q", name)
		}
		return gitPlan{specs: []config.RefSpec{config.RefSpec("+" + name.String() + ":" + name.String())}, ref: name}, nil
	}
	switch {
	case rev == "" || rev == "HEAD":
		head := byName[plumbing.HEAD]
		if head == nil {
			return gitPlan{}, sandbox.Errorf(sandbox.ErrInvalid, CodeEmpty, "the git repository has no HEAD: it is empty")
		}
		if head.Type() == plumbing.SymbolicReference && head.Target().IsBranch() && byName[head.Target()] != nil {
			return branch(head.Target())
		}
		// No symref advertised: a branch whose tip is HEAD's commit.
		for _, r := range refs {
			if r.Name().IsBranch() && r.Type() == plumbing.HashReference && r.Hash() == head.Hash() {
				return branch(r.Name())
			}
		}
		dst := plumbing.NewRemoteReferenceName(remoteName, "HEAD")
		return gitPlan{specs: []config.RefSpec{config.RefSpec("+HEAD:" + dst.String())}, ref: dst, temp: true}, nil
	case strings.HasPrefix(rev, "refs/"):
		name := plumbing.ReferenceName(rev)
		if byName[name] == nil {
			break
		}
		if name.IsBranch() {
			return branch(name)
		}
		return exact(name)
	case byName[plumbing.NewBranchReferenceName(rev)] != nil:
		return branch(plumbing.NewBranchReferenceName(rev))
	case byName[plumbing.NewTagReferenceName(rev)] != nil:
		return exact(plumbing.NewTagReferenceName(rev))
	case hexRev().MatchString(rev) && len(rev) == 40:
		h := plumbing.NewHash(rev)
		for _, r := range refs {
			if r.Type() == plumbing.HashReference && r.Hash() == h {
				name := plumbing.ReferenceName(strings.TrimSuffix(r.Name().String(), "^{}"))
				if name == plumbing.HEAD {
					continue
				}
				p, err := exact(name)
				p.hash = h
				return p, err
			}
		}
		dst := plumbing.ReferenceName("refs/paddock/want")
		return gitPlan{specs: []config.RefSpec{config.RefSpec(rev + ":" + dst.String())}, ref: dst, hash: h, temp: true}, nil
	case hexRev().MatchString(rev):
		return gitPlan{full: true, short: rev}, nil
	}
	return gitPlan{}, revisionNotFound(rev)
}

func revisionNotFound(rev string) error {
	return sandbox.Errorf(sandbox.ErrInvalid, CodeRevisionNotFound, "revision %q is not a branch, tag or commit of the repository", rev)
}

// resolveCommit finds the commit the plan fetched.
func resolveCommit(repo *git.Repository, plan gitPlan, rev string) (*object.Commit, error) {
	var h plumbing.Hash
	switch {
	case !plan.hash.IsZero():
		h = plan.hash
	case plan.short != "":
		got, err := repo.ResolveRevision(plumbing.Revision(plan.short))
		if err != nil {
			return nil, revisionNotFound(rev)
		}
		h = *got
	default:
		ref, err := repo.Storer.Reference(plan.ref)
		if err != nil {
			return nil, revisionNotFound(rev)
		}
		h = ref.Hash()
	}
	// A tag may name an annotated tag object: peel it to its commit.
	for range 10 {
		tag, err := repo.TagObject(h)
		if err != nil {
			break
		}
		h = tag.Target
	}
	c, err := repo.CommitObject(h)
	if err != nil {
		return nil, revisionNotFound(rev)
	}
	return c, nil
}

// setupClone makes the bare store look like a fresh clone: non-bare, the
// branch checked out and tracking origin (or HEAD detached at the commit).
func setupClone(repo *git.Repository, st *filesystem.Storage, plan gitPlan, commit plumbing.Hash) error {
	cfg, err := repo.Config()
	if err != nil {
		return fmt.Errorf("source: read config: %w", err)
	}
	cfg.Core.IsBare = false
	head := plumbing.NewHashReference(plumbing.HEAD, commit)
	if plan.branch != "" {
		local := plumbing.NewBranchReferenceName(plan.branch)
		if err := st.SetReference(plumbing.NewHashReference(local, commit)); err != nil {
			return fmt.Errorf("source: set branch: %w", err)
		}
		head = plumbing.NewSymbolicReference(plumbing.HEAD, local)
		cfg.Branches[plan.branch] = &config.Branch{Name: plan.branch, Remote: remoteName, Merge: local}
	}
	if err := st.SetReference(head); err != nil {
		return fmt.Errorf("source: set HEAD: %w", err)
	}
	if err := repo.SetConfig(cfg); err != nil {
		return fmt.Errorf("source: write config: %w", err)
	}
	return nil
}

// treeEntries lists the commit's tree, validating every name component on
// its own (go-git's walker would join and clean them first), and reads
// blob sizes and link targets.
func (f *Fetcher) treeEntries(st *filesystem.Storage, commit *object.Commit) ([]gitEntry, error) {
	tree, err := commit.Tree()
	if err != nil {
		return nil, sandbox.Errorf(sandbox.ErrInvalid, CodeInvalid, "read the commit's tree: %v", err)
	}
	var out []gitEntry
	var total int64
	var walk func(t *object.Tree, prefix string, depth int) error
	walk = func(t *object.Tree, prefix string, depth int) error {
		if depth > 256 {
			return entryErrorf("the tree is nested more than 256 levels deep")
		}
		for _, e := range t.Entries {
			if err := treeName(e.Name); err != nil {
				return err
			}
			name := prefix + e.Name
			if len(out) >= f.cfg.MaxEntries {
				return tooLarge("number of entries", int64(f.cfg.MaxEntries))
			}
			ge := gitEntry{name: name, mode: e.Mode, hash: e.Hash}
			switch e.Mode {
			case filemode.Dir:
				out = append(out, ge)
				sub, err := object.GetTree(st, e.Hash)
				if err != nil {
					return entryErrorf("read tree %q: %v", name, err)
				}
				if err := walk(sub, name+"/", depth+1); err != nil {
					return err
				}
				continue
			case filemode.Submodule:
				// Not fetched: an empty directory, as git leaves it.
			case filemode.Regular, filemode.Deprecated, filemode.Executable, filemode.Symlink:
				obj, err := st.EncodedObject(plumbing.BlobObject, e.Hash)
				if err != nil {
					return entryErrorf("read blob %q: %v", name, err)
				}
				ge.size = obj.Size()
				total += ge.size
				if total > f.cfg.MaxBytes {
					return tooLarge("unpacked content", f.cfg.MaxBytes)
				}
				if e.Mode == filemode.Symlink {
					if ge.size > maxNameLen {
						return entryErrorf("symlink %q has an over-long target", name)
					}
					r, err := obj.Reader()
					if err != nil {
						return entryErrorf("read symlink %q: %v", name, err)
					}
					b, err := io.ReadAll(io.LimitReader(r, maxNameLen+1))
					r.Close()
					if err != nil {
						return entryErrorf("read symlink %q: %v", name, err)
					}
					ge.link = string(b)
					if err := symlinkTarget(name, ge.link); err != nil {
						return err
					}
				}
			default:
				return entryErrorf("tree entry %q has unsupported mode %o", name, uint32(e.Mode))
			}
			out = append(out, ge)
		}
		return nil
	}
	if err := walk(tree, "", 0); err != nil {
		return nil, err
	}
	return out, nil
}

// treeName refuses a tree entry name git itself would refuse to check out.
func treeName(n string) error {
	switch {
	case n == "" || n == "." || n == ".." || strings.ContainsAny(n, "/\x00"):
		return entryErrorf("the tree has an entry named %q", n)
	case strings.EqualFold(strings.TrimRight(n, ". "), ".git"):
		return entryErrorf("the tree has an entry named %q, which would replace the repository's own .git", n)
	}
	return nil
}

// gitTar streams the working tree, then writes the index and streams the
// .git directory.
func (f *Fetcher) gitTar(st *filesystem.Storage, gitDir string, entries []gitEntry, mtime time.Time, w *tarWriter) error {
	chk := newChecker(2*f.cfg.MaxBytes, f.cfg.MaxEntries+1<<16)
	idx := &index.Index{Version: 2}
	for _, e := range entries {
		switch e.mode {
		case filemode.Dir, filemode.Submodule:
			if err := chk.add(e.name, tar.TypeDir, 0); err != nil {
				return err
			}
			if err := w.dir(e.name, 0o755, mtime); err != nil {
				return err
			}
		case filemode.Symlink:
			if err := chk.add(e.name, tar.TypeSymlink, 0); err != nil {
				return err
			}
			if err := w.symlink(e.name, e.link, mtime); err != nil {
				return err
			}
		default:
			if err := chk.add(e.name, tar.TypeReg, e.size); err != nil {
				return err
			}
			mode := int64(0o644)
			if e.mode == filemode.Executable {
				mode = 0o755
			}
			obj, err := st.EncodedObject(plumbing.BlobObject, e.hash)
			if err != nil {
				return entryErrorf("read blob %q: %v", e.name, err)
			}
			r, err := obj.Reader()
			if err != nil {
				return entryErrorf("read blob %q: %v", e.name, err)
			}
			err = w.file(e.name, mode, e.size, mtime, r)
			r.Close()
			if err != nil {
				return err
			}
		}
		if e.mode != filemode.Dir {
			m := e.mode
			if m == filemode.Deprecated {
				m = filemode.Regular
			}
			idx.Entries = append(idx.Entries, &index.Entry{Name: e.name, Hash: e.hash, Mode: m, Size: uint32(e.size), ModifiedAt: mtime, CreatedAt: mtime})
		}
	}
	// Git wants index entries in byte order of their full names; a tree
	// from a hostile server need not be sorted as git sorts trees.
	slices.SortStableFunc(idx.Entries, func(a, b *index.Entry) int { return strings.Compare(a.Name, b.Name) })
	if err := st.SetIndex(idx); err != nil {
		return fmt.Errorf("source: write index: %w", err)
	}
	return writeDir(gitDir, ".git", chk, w)
}

// writeDir streams a host directory that paddock itself wrote (the git
// store) under prefix: directories and regular files only, opened without
// following links.
func writeDir(root, prefix string, chk *checker, w *tarWriter) error {
	if err := w.dir(prefix, 0o755, time.Now()); err != nil {
		return err
	}
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil || rel == "." {
			return err
		}
		name := prefix + "/" + filepath.ToSlash(rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			if err := chk.add(name, tar.TypeDir, 0); err != nil {
				return err
			}
			return w.dir(name, int64(info.Mode().Perm()), info.ModTime())
		case info.Mode().IsRegular():
			if err := chk.add(name, tar.TypeReg, info.Size()); err != nil {
				return err
			}
			fd, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
			if err != nil {
				return err
			}
			defer fd.Close()
			return w.file(name, int64(info.Mode().Perm()), info.Size(), info.ModTime(), fd)
		}
		return nil // nothing else is expected in a store go-git wrote
	})
}
