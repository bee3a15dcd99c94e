package node

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/source"
)

// Sources is what the node needs to populate a sandbox from a git or
// tarball source; *source.Fetcher satisfies it. Fetch runs on the host, so
// credentials never enter the sandbox; the tar it returns holds names
// relative to the target dir, and may still fail mid-stream.
type Sources interface {
	Fetch(ctx context.Context, src sandbox.Source) (io.ReadCloser, *sandbox.SourceInfo, error)
}

var _ Sources = (*source.Fetcher)(nil)

const (
	// populateTimeout bounds fetching a source and writing it into the
	// sandbox; the fetcher bounds its network part more tightly.
	populateTimeout = 30 * time.Minute
	// maxOutLinks bounds the symlinks pointing out of the target dir that
	// one source may carry (each is made by a command in the sandbox).
	maxOutLinks = 10000
)

// normalizeSource validates a create request's source; the fetcher checks
// again what only it knows (file:// allowed, the addresses).
func normalizeSource(cfg *Config, src *sandbox.Source) (*sandbox.Source, error) {
	if src == nil {
		return nil, nil
	}
	if cfg.Sources == nil {
		return nil, sandbox.Errorf(sandbox.ErrUnsupported, "sources_unsupported", "this server does not fetch git or tarball sources")
	}
	s := *src
	bad := func(format string, args ...any) (*sandbox.Source, error) {
		return nil, sandbox.Errorf(sandbox.ErrInvalid, "invalid_source", format, args...)
	}
	switch s.Type {
	case sandbox.SourceGit:
		if s.StripComponents != 0 {
			return bad("stripComponents applies to tarball sources only")
		}
		if len(s.Revision) > 256 || strings.ContainsAny(s.Revision, "\x00\r\n") || strings.HasPrefix(s.Revision, "-") {
			return bad("revision %q is not a valid branch, tag or commit", s.Revision)
		}
	case sandbox.SourceTarball:
		if s.Revision != "" || s.Depth != 0 {
			return bad("revision and depth apply to git sources only")
		}
		if s.StripComponents < 0 || s.StripComponents > 64 {
			return bad("stripComponents must be in [0, 64], got %d", s.StripComponents)
		}
	default:
		return bad("source type must be %q or %q, got %q", sandbox.SourceGit, sandbox.SourceTarball, s.Type)
	}
	if _, err := source.ParseURL(s.Type, s.URL); err != nil {
		return nil, err
	}
	if s.Dir != "" && (!path.IsAbs(s.Dir) || path.Clean(s.Dir) != s.Dir || strings.ContainsRune(s.Dir, 0) || len(s.Dir) > 4096) {
		return bad("source dir %q must be an absolute, clean path", s.Dir)
	}
	switch {
	case s.Password != "" && s.Username == "":
		return bad("a source password needs a username")
	case s.Token != "" && s.Password != "":
		return bad("give a source password or a token, not both")
	}
	return &s, nil
}

// sourceDir is where a source lands: its Dir, else the sandbox's working
// dir, else the user's home. A working dir (or a home) of "/" counts as
// none: a repository spread over the root would help nobody, so the
// default user's home takes it.
func sourceDir(dir, workingDir, home string) string {
	switch {
	case dir != "":
		return dir
	case workingDir != "" && workingDir != "/":
		return workingDir
	case home != "" && home != "/":
		return home
	}
	return agent.UserHome
}

// populate fetches src on the host and writes it into the new sandbox
// through its agent, owned by the sandbox user.
func (m *Manager) populate(ctx context.Context, e *entry, client *agent.Client, src *sandbox.Source) (*sandbox.SourceInfo, error) {
	if m.cfg.Sources == nil {
		return nil, sandbox.Errorf(sandbox.ErrUnsupported, "sources_unsupported", "this server does not fetch git or tarball sources")
	}
	sb, _, _ := e.snapshot()
	user := sb.RunAs()
	dir := sourceDir(src.Dir, sb.WorkingDir, user.Home)
	// Like the driver calls: a client hanging up does not cut the work
	// short; the create fails or succeeds as a whole.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), populateTimeout)
	defer cancel()
	start := time.Now()
	rc, info, err := m.cfg.Sources.Fetch(ctx, *src)
	if err != nil {
		return nil, fmt.Errorf("fetch source: %w", err)
	}
	defer rc.Close()
	// The write is the user's; a dir the user could not create (a source
	// dir or WORKDIR under a root-owned parent) is made for it first.
	if err := client.Mkdir(ctx, agent.MkdirRequest{Path: dir, Mode: 0o755, Sudo: true, ForUser: true}); err != nil {
		return nil, fmt.Errorf("create source dir %s: %w", dir, err)
	}
	links, res, err := writeSource(ctx, client, dir, rc)
	if err != nil {
		return nil, fmt.Errorf("write source into %s: %w", dir, err)
	}
	if err := makeOutLinks(ctx, client, dir, links, user); err != nil {
		return nil, err
	}
	info.Dir = dir
	m.log.Info("source written", "sandbox", sb.ID, "type", info.Type, "url", info.URL, "commit", info.Commit,
		"digest", info.Digest, "dir", dir, "files", res.Files, "bytes", res.Bytes, "outLinks", len(links),
		"duration", time.Since(start).Round(time.Millisecond))
	return info, nil
}

// outLink is a symlink whose target is absolute or leads out of the target
// dir. The agent's tar writer refuses those (right for uploads); for a
// source they are content like any other, and harmless: the sandbox's
// kernel resolves them inside the sandbox's root, and nothing on the host
// follows them. So they are held back from the tar and made afterwards by
// a command inside the sandbox.
type outLink struct {
	name, target string
}

var errAgentDone = errors.New("the agent stopped reading the source")

// writeSource streams r into dir through the agent, holding back the
// symlinks that lead out of dir.
func writeSource(ctx context.Context, client *agent.Client, dir string, r io.Reader) ([]outLink, agent.WriteResult, error) {
	pr, pw := io.Pipe()
	var links []outLink
	done := make(chan error, 1)
	go func() {
		err := splitOutLinks(r, pw, &links)
		pw.CloseWithError(err)
		done <- err
	}()
	res, werr := client.WriteTar(ctx, dir, false, pr)
	pr.CloseWithError(errAgentDone) // unblocks the splitter if the agent gave up
	ferr := <-done
	switch {
	case ferr != nil && !errors.Is(ferr, errAgentDone):
		// The source's own error (a hostile entry, the size cap) says
		// more than the agent's view of a cut stream.
		return nil, res, ferr
	case werr != nil:
		return nil, res, werr
	case ferr != nil:
		return nil, res, ferr
	}
	return links, res, nil
}

// splitOutLinks copies a tar stream, moving the symlinks that lead out of
// the target dir into links. A later entry of the same name replaces a
// held link, as tar would; an entry below a held link is refused (the
// source package never emits one).
func splitOutLinks(r io.Reader, w io.Writer, links *[]outLink) error {
	tr := tar.NewReader(r)
	tw := tar.NewWriter(w)
	held := map[string]int{} // name → index in *links
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			var se *sandbox.Error
			if errors.As(err, &se) {
				return err
			}
			return fmt.Errorf("read source stream: %w", err)
		}
		name := path.Clean(hdr.Name)
		for d := path.Dir(name); d != "." && d != "/"; d = path.Dir(d) {
			if _, ok := held[d]; ok {
				return sandbox.Errorf(sandbox.ErrInvalid, "source_invalid_entry", "source entry %q lies below the symlink %q", hdr.Name, d)
			}
		}
		if i, ok := held[name]; ok {
			(*links)[i].name = "" // replaced
			delete(held, name)
		}
		if hdr.Typeflag == tar.TypeSymlink && leadsOut(name, hdr.Linkname) {
			if len(held) >= maxOutLinks {
				return sandbox.Errorf(sandbox.ErrTooLarge, "source_too_large", "the source has more than %d symlinks leading out of its directory", maxOutLinks)
			}
			held[name] = len(*links)
			*links = append(*links, outLink{name: name, target: hdr.Linkname})
			continue
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return err
		}
	}
	kept := (*links)[:0]
	for _, l := range *links {
		if l.name != "" {
			kept = append(kept, l)
		}
	}
	*links = kept
	return tw.Close()
}

// leadsOut says whether the agent would refuse the link: absolute, or
// resolving lexically above the dir it is unpacked into.
func leadsOut(name, target string) bool {
	if target == "" || path.IsAbs(target) {
		return true
	}
	resolved := path.Join(path.Dir(name), target)
	return resolved == ".." || strings.HasPrefix(resolved, "../")
}

// outLinkScript makes each (target, name) pair of its arguments after the
// first, uid:gid, a symlink owned by uid:gid, replacing a file of that name
// but never a directory.
const outLinkScript = `owner=$1; shift
while [ "$#" -gt 1 ]; do
  if [ -d "$2" ] && [ ! -L "$2" ]; then echo "$2 is a directory" >&2; exit 1; fi
  rm -f -- "$2" && ln -s -- "$1" "$2" && chown -h "$owner" -- "$2" || exit 1
  shift 2
done`

// makeOutLinks creates the held-back links with sh and ln inside the
// sandbox, in batches that keep the argument list small. It runs as root
// in the sandbox (confined like any sudo command) so that a root-owned
// working dir of an image works too.
func makeOutLinks(ctx context.Context, client *agent.Client, dir string, links []outLink, user sandbox.User) error {
	owner := fmt.Sprintf("%d:%d", user.UID, user.GID)
	for len(links) > 0 {
		args := []string{"-c", outLinkScript, "sh", owner}
		size := 0
		n := 0
		for ; n < len(links) && size < 64<<10; n++ {
			args = append(args, links[n].target, path.Join(dir, links[n].name))
			size += len(links[n].target) + len(dir) + len(links[n].name) + 2
		}
		cmd, err := client.Run(ctx, agent.CommandRequest{Cmd: "sh", Args: args, Cwd: "/", Sudo: true, TimeoutMs: 60_000})
		if err != nil {
			return fmt.Errorf("create the source's symlinks: %w", err)
		}
		if cmd.Status != agent.StatusExited || cmd.ExitCode == nil || *cmd.ExitCode != 0 {
			why := cmd.Error
			if why == "" {
				why = commandStderr(ctx, client, cmd.ID)
			}
			if why == "" {
				why = "exit " + exitString(cmd)
			}
			return sandbox.Errorf(sandbox.ErrInvalid, "source_links_failed",
				"the source has symlinks leading out of %s (such as %q -> %q); making them in the sandbox needs sh and ln in its image: %s",
				dir, links[0].name, links[0].target, why)
		}
		links = links[n:]
	}
	return nil
}

func exitString(c agent.Command) string {
	if c.ExitCode == nil {
		return c.Status
	}
	return strconv.Itoa(*c.ExitCode)
}

// commandStderr returns the start of a finished command's stderr.
func commandStderr(ctx context.Context, client *agent.Client, id string) string {
	out, err := client.Output(ctx, id, 0, false)
	if err != nil {
		return ""
	}
	defer out.Close()
	var b strings.Builder
	for b.Len() < 512 {
		f, err := out.Next()
		if err != nil {
			break
		}
		if f.Kind == agent.FrameStderr {
			b.Write(f.Data)
		}
	}
	s := strings.TrimSpace(b.String())
	if len(s) > 512 {
		s = s[:512]
	}
	return s
}
