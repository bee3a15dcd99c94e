package source

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// ent describes one entry of a test archive.
type ent struct {
	name, body, link string
	typ              byte
	mode             int64
}

func makeTar(t *testing.T, entries ...ent) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		mode := e.mode
		if mode == 0 {
			mode = 0o644
		}
		hdr := &tar.Header{Name: e.name, Typeflag: typ, Mode: mode, Linkname: e.link, Uid: 0, Uname: "root"}
		if typ == tar.TypeReg {
			hdr.Size = int64(len(e.body))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(e.body))
	}
	tw.Close()
	return buf.Bytes()
}

func gz(b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

// serveFiles serves name → content on 127.0.0.1; "/private/..." paths need
// the bearer token "tok".
func serveFiles(t *testing.T, files map[string][]byte) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/private/") && r.Header.Get("Authorization") != "Bearer tok" {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		b, ok := files[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Write(b)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestTarballFormatsAndStrip(t *testing.T) {
	plain := makeTar(t,
		ent{name: "pkg-1.0/", typ: tar.TypeDir, mode: 0o755},
		ent{name: "pkg-1.0/README", body: "hello\n"},
		ent{name: "pkg-1.0/bin/tool", body: "#!/bin/sh\n", mode: 0o4755},
		ent{name: "pkg-1.0/link", typ: tar.TypeSymlink, link: "README"},
		ent{name: "pkg-1.0/hard", typ: tar.TypeLink, link: "pkg-1.0/README"},
		ent{name: "top.txt", body: "stripped away"},
	)
	var zs bytes.Buffer
	zw, _ := zstd.NewWriter(&zs)
	zw.Write(plain)
	zw.Close()
	base := serveFiles(t, map[string][]byte{"/a.tar": plain, "/a.tar.gz": gz(plain), "/a.tar.zst": zs.Bytes(), "/private/a.tgz": gz(plain)})
	f := newFetcher(t, nil)
	for _, tc := range []struct {
		path  string
		token string
		body  []byte
	}{
		{"/a.tar", "", plain},
		{"/a.tar.gz", "", gz(plain)},
		{"/a.tar.zst", "", zs.Bytes()},
		{"/private/a.tgz", "tok", gz(plain)},
	} {
		t.Run(tc.path, func(t *testing.T) {
			entries, info, err := fetchAll(t, f, sandbox.Source{Type: sandbox.SourceTarball, URL: base + tc.path, StripComponents: 1, Token: tc.token})
			if err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256(tc.body)
			if info.Digest != "sha256:"+hex.EncodeToString(sum[:]) || info.Type != sandbox.SourceTarball || info.URL != base+tc.path {
				t.Errorf("info = %+v", info)
			}
			want := map[string]tarEntry{
				"README":   {typ: tar.TypeReg, mode: 0o644, content: "hello\n"},
				"bin/tool": {typ: tar.TypeReg, mode: 0o4755, content: "#!/bin/sh\n"},
				"link":     {typ: tar.TypeSymlink, mode: 0o777, link: "README"},
				"hard":     {typ: tar.TypeLink, link: "README"},
			}
			if len(entries) != len(want) {
				t.Errorf("entries = %+v", entries)
			}
			for name, w := range want {
				if got := entries[name]; got != w {
					t.Errorf("%s = %+v, want %+v", name, got, w)
				}
			}
		})
	}
	_, _, err := fetchAll(t, f, sandbox.Source{Type: sandbox.SourceTarball, URL: base + "/private/a.tgz"})
	requireCode(t, err, CodeAuthFailed)
	_, _, err = fetchAll(t, f, sandbox.Source{Type: sandbox.SourceTarball, URL: base + "/private/a.tgz", Token: "wrong"})
	requireCode(t, err, CodeAuthFailed)
	_, _, err = fetchAll(t, f, sandbox.Source{Type: sandbox.SourceTarball, URL: base + "/missing.tgz"})
	requireCode(t, err, CodeNotFound)
}

// TestTarballHostile has one case per hostile entry: each is refused (the
// stream fails with the code) or neutralised (the entry is rewritten or
// dropped), and nothing on the host is touched.
func TestTarballHostile(t *testing.T) {
	passwd, _ := os.ReadFile("/etc/passwd")
	for _, tc := range []struct {
		name    string
		entries []ent
		code    string              // refused with this code
		want    map[string]tarEntry // else the stream holds exactly these
	}{
		{name: "dotdot", entries: []ent{{name: "../evil", body: "x"}}, code: CodeInvalidEntry},
		{name: "dotdot inside", entries: []ent{{name: "a/../../evil", body: "x"}}, code: CodeInvalidEntry},
		{name: "absolute made relative", entries: []ent{{name: "/etc/evil", body: "x"}},
			want: map[string]tarEntry{"etc/evil": {typ: tar.TypeReg, mode: 0o644, content: "x"}}},
		{name: "symlink out kept as a link", entries: []ent{{name: "passwd", typ: tar.TypeSymlink, link: "/etc/passwd"}, {name: "up", typ: tar.TypeSymlink, link: "../../.."}},
			want: map[string]tarEntry{"passwd": {typ: tar.TypeSymlink, mode: 0o777, link: "/etc/passwd"}, "up": {typ: tar.TypeSymlink, mode: 0o777, link: "../../.."}}},
		{name: "write through a symlink", entries: []ent{{name: "etc", typ: tar.TypeSymlink, link: "/etc"}, {name: "etc/evil", body: "x"}}, code: CodeInvalidEntry},
		{name: "dir through a symlink", entries: []ent{{name: "d", typ: tar.TypeSymlink, link: "/"}, {name: "d/tmp/", typ: tar.TypeDir}}, code: CodeInvalidEntry},
		{name: "hardlink to a host file", entries: []ent{{name: "h", typ: tar.TypeLink, link: "/etc/passwd"}}, code: CodeInvalidEntry},
		{name: "hardlink out", entries: []ent{{name: "h", typ: tar.TypeLink, link: "../x"}}, code: CodeInvalidEntry},
		{name: "hardlink to a symlink", entries: []ent{{name: "s", typ: tar.TypeSymlink, link: "/etc/passwd"}, {name: "h", typ: tar.TypeLink, link: "s"}}, code: CodeInvalidEntry},
		{name: "char device dropped", entries: []ent{{name: "null", typ: tar.TypeChar}, {name: "ok", body: "x"}},
			want: map[string]tarEntry{"ok": {typ: tar.TypeReg, mode: 0o644, content: "x"}}},
		{name: "block device dropped", entries: []ent{{name: "sda", typ: tar.TypeBlock}}, want: map[string]tarEntry{}},
		{name: "fifo dropped", entries: []ent{{name: "fifo", typ: tar.TypeFifo}}, want: map[string]tarEntry{}},
		{name: "empty symlink target", entries: []ent{{name: "s", typ: tar.TypeSymlink, link: ""}}, code: CodeInvalidEntry},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := serveFiles(t, map[string][]byte{"/x.tgz": gz(makeTar(t, tc.entries...))})
			f := newFetcher(t, nil)
			got, _, err := fetchAll(t, f, sandbox.Source{Type: sandbox.SourceTarball, URL: base + "/x.tgz"})
			if tc.code != "" {
				if sandbox.CodeOf(err) != tc.code {
					t.Fatalf("err = %v (code %q), want %s", err, sandbox.CodeOf(err), tc.code)
				}
				if !errorsIsInvalid(err) {
					t.Errorf("%v is not a 400", err)
				}
			} else {
				if err != nil {
					t.Fatal(err)
				}
				if len(got) != len(tc.want) {
					t.Errorf("entries = %+v, want %+v", got, tc.want)
				}
				for name, w := range tc.want {
					if got[name] != w {
						t.Errorf("%s = %+v, want %+v", name, got[name], w)
					}
				}
			}
			if after, _ := os.ReadFile("/etc/passwd"); !bytes.Equal(after, passwd) {
				t.Fatal("/etc/passwd changed")
			}
			if _, err := os.Lstat("/etc/evil"); err == nil {
				t.Fatal("/etc/evil exists on the host")
			}
		})
	}
}

func errorsIsInvalid(err error) bool {
	var se *sandbox.Error
	for e := err; e != nil; {
		if s, ok := e.(*sandbox.Error); ok {
			se = s
			break
		}
		u, ok := e.(interface{ Unwrap() error })
		if !ok {
			break
		}
		e = u.Unwrap()
	}
	return se != nil && se.Kind == sandbox.ErrInvalid
}

func TestTarballOversize(t *testing.T) {
	big := bytes.Repeat([]byte("z"), 4<<20)
	bomb := gz(makeTar(t, ent{name: "zeros", body: string(big)})) // ~4 KiB compressed
	raw := makeTar(t, ent{name: "f", body: string(big[:64<<10])})
	base := serveFiles(t, map[string][]byte{"/bomb.tgz": bomb, "/raw.tar": raw})
	f := newFetcher(t, func(c *Config) { c.MaxBytes = 32 << 10 })
	if len(bomb) > 32<<10 {
		t.Fatalf("bomb is %d bytes compressed", len(bomb))
	}
	// The download is within the cap, the content is not.
	_, _, err := fetchAll(t, f, sandbox.Source{Type: sandbox.SourceTarball, URL: base + "/bomb.tgz"})
	requireCode(t, err, CodeTooLarge)
	// The download itself is over the cap.
	_, _, err = fetchAll(t, f, sandbox.Source{Type: sandbox.SourceTarball, URL: base + "/raw.tar"})
	requireCode(t, err, CodeTooLarge)

	many := make([]ent, 20)
	for i := range many {
		many[i] = ent{name: "f" + string(rune('a'+i)), body: "x"}
	}
	base = serveFiles(t, map[string][]byte{"/many.tar": makeTar(t, many...)})
	f = newFetcher(t, func(c *Config) { c.MaxEntries = 10 })
	_, _, err = fetchAll(t, f, sandbox.Source{Type: sandbox.SourceTarball, URL: base + "/many.tar"})
	requireCode(t, err, CodeTooLarge)
}

func TestTarballNotAnArchive(t *testing.T) {
	xz := append([]byte{0xfd, '7', 'z', 'X', 'Z', 0}, make([]byte, 100)...)
	base := serveFiles(t, map[string][]byte{"/junk": []byte(strings.Repeat("not a tar ", 100)), "/x.tar.xz": xz, "/bad.gz": {0x1f, 0x8b, 1, 2}})
	f := newFetcher(t, nil)
	for _, p := range []string{"/junk", "/x.tar.xz", "/bad.gz"} {
		_, _, err := fetchAll(t, f, sandbox.Source{Type: sandbox.SourceTarball, URL: base + p})
		requireCode(t, err, CodeInvalidArchive)
	}
}
