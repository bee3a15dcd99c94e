package e2e

import (
	"archive/tar"
	"bytes"
	"encoding/base64"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/imagetest"
	"github.com/paddock-dev/paddock/internal/store"
	"github.com/paddock-dev/paddock/internal/volume"
	"github.com/paddock-dev/paddock/sdk"
)

// TestImageSandbox pushes a two-layer image to a registry the test serves on
// 127.0.0.1, pulls it through the API, and runs commands in a sandbox made
// from it: the image's Env and WorkingDir apply, commands run as uid 1000,
// and the upper layer's whiteout hides the lower layer's file.
func TestImageSandbox(t *testing.T) {
	requireSandboxes(t)
	img := busyboxImage(t)
	ref := imagetest.Registry(t) + "/e2e/busybox:1"
	imagetest.Push(t, ref, img)

	s := startStack(t, newDataDir(t), stackOptions{})
	ctx := ctxFor(t, 2*time.Minute)

	var events []api.PullProgress
	got, err := s.client.PullImage(ctx, api.PullImageRequest{Ref: ref, Insecure: true}, func(p api.PullProgress) { events = append(events, p) })
	if err != nil {
		t.Fatalf("pull: %v", err)
	}
	if got.Layers != 2 || got.Digest == "" || got.Config.WorkingDir != "/work" {
		t.Errorf("pulled image = %+v", got)
	}
	if done := countDone(events); done != 2 {
		t.Errorf("pull progress has %d done layers, want 2: %+v", done, events)
	}
	list, err := s.client.ListImages(ctx)
	if err != nil || len(list) != 1 || list[0].Ref != got.Ref {
		t.Fatalf("list images = %+v, %v", list, err)
	}
	if one, err := s.client.GetImage(ctx, ref); err != nil || one.Digest != got.Digest {
		t.Fatalf("get image = %+v, %v", one, err)
	}

	sb := s.create(t, api.CreateSandboxRequest{Image: ref})
	if sb.ImageDigest != got.Digest || sb.WorkingDir != "/work" {
		t.Errorf("sandbox image fields: digest %q workingDir %q", sb.ImageDigest, sb.WorkingDir)
	}
	// No User in the image: the default sandbox user.
	if u := sb.User; sb.ImageUser != "" || u == nil || u.UID != 1000 || u.GID != 1000 || u.Home != "/home/user" {
		t.Errorf("sandbox user: imageUser %q, user %+v; want 1000:1000 /home/user", sb.ImageUser, u)
	}
	out, errOut, code := run(t, sb, api.CommandRequest{Cmd: "sh", Args: []string{"-c", "echo $GREETING; pwd; id -u; cat /added; echo $PATH"}})
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	if want := "from-image\n/work\n1000\nadded\n/bin\n"; out != want {
		t.Errorf("stdout = %q, want %q", out, want)
	}
	if _, errOut, code := run(t, sb, api.CommandRequest{Cmd: "ls", Args: []string{"/deleted"}}); code == 0 || !strings.Contains(errOut, "No such file") {
		t.Errorf("ls /deleted: exit %d, stderr %q; the whiteout should hide it", code, errOut)
	}
	// The upper dir is the sandbox's own: writing leaves the image alone.
	if _, errOut, code := run(t, sb, api.CommandRequest{Cmd: "sh", Args: []string{"-c", "echo x > /home/user/f && cat /home/user/f"}}); code != 0 {
		t.Errorf("write in home: exit %d, stderr %q", code, errOut)
	}

	if err := s.client.RemoveImage(ctx, ref); !sdk.IsCode(err, "image_in_use") {
		t.Errorf("remove while running: %v, want image_in_use", err)
	}
	if err := sb.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := sb.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.client.RemoveImage(ctx, ref); err != nil {
		t.Fatalf("remove: %v", err)
	}
	if layers, _ := os.ReadDir(s.dataDir + "/images/layers"); len(layers) != 0 {
		t.Errorf("%d layers left after remove", len(layers))
	}

	if _, err := s.client.Create(ctx, api.CreateSandboxRequest{Image: ref}); !sdk.IsCode(err, "image_not_found") {
		t.Errorf("create from a removed image: %v, want image_not_found", err)
	} else if ae := (*sdk.APIError)(nil); !asAPIError(err, &ae) || ae.Status != http.StatusNotFound {
		t.Errorf("create from a removed image: %v, want HTTP 404", err)
	}
}

// TestImagePullBadCredentials pulls from a registry behind basic auth with
// the wrong password: the refusal arrives as a 401 "registry_auth".
func TestImagePullBadCredentials(t *testing.T) {
	requireSandboxes(t)
	reg := httptest.NewServer(basicAuth("u", "right", registry.New(registry.Logger(log.New(io.Discard, "", 0)))))
	t.Cleanup(reg.Close)
	s := startStack(t, newDataDir(t), stackOptions{})
	ref := strings.TrimPrefix(reg.URL, "http://") + "/e2e/none:1"
	_, err := s.client.PullImage(ctxFor(t, time.Minute), api.PullImageRequest{Ref: ref, Username: "u", Password: "wrong", Insecure: true}, nil)
	var ae *sdk.APIError
	if !asAPIError(err, &ae) || ae.Status != http.StatusUnauthorized || ae.Code != "registry_auth" {
		t.Fatalf("pull with a bad password: %v, want HTTP 401 registry_auth", err)
	}
}

func asAPIError(err error, target **sdk.APIError) bool {
	ae, ok := err.(*sdk.APIError)
	if ok {
		*target = ae
	}
	return ok
}

func countDone(events []api.PullProgress) int {
	n := 0
	for _, e := range events {
		if e.Done {
			n++
		}
	}
	return n
}

func basicAuth(user, pass string, next http.Handler) http.Handler {
	want := "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != want {
			w.Header().Set("WWW-Authenticate", `Basic realm="e2e"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// busyboxImage builds the test image: a base layer with busybox, a few
// applet links, /etc/passwd, /work and /deleted, and a layer that adds
// /added and whites out /deleted.
func busyboxImage(t *testing.T) v1.Image {
	t.Helper()
	base := imagetest.Layer(t, func(tw *tar.Writer) {
		imagetest.WriteBusybox(t, tw, "sh", "ls", "cat", "id", "env", "pwd", "echo")
		imagetest.Dir(t, tw, "work/")
		imagetest.File(t, tw, "deleted", []byte("gone\n"), 0o644)
	})
	top := imagetest.Layer(t, func(tw *tar.Writer) {
		imagetest.File(t, tw, "added", []byte("added\n"), 0o644)
		imagetest.File(t, tw, ".wh.deleted", nil, 0o644)
	})
	return imagetest.Image(t, []string{"GREETING=from-image", "PATH=/bin"}, "/work", base, top)
}

// TestImageSandboxNetwork: with a network, the driver's resolv.conf and
// hosts are bound over an image that has no /etc of its own to hold them.
func TestImageSandboxNetwork(t *testing.T) {
	requireSandboxes(t)
	img := busyboxImage(t)
	ref := imagetest.Registry(t) + "/e2e/busybox:net"
	imagetest.Push(t, ref, img)
	s := startStack(t, newDataDir(t), stackOptions{network: testPool})
	if _, err := s.client.PullImage(ctxFor(t, time.Minute), api.PullImageRequest{Ref: ref}, nil); err != nil {
		t.Fatalf("pull: %v", err)
	}
	sb := s.create(t, api.CreateSandboxRequest{Image: ref})
	out, errOut, code := run(t, sb, api.CommandRequest{Cmd: "cat", Args: []string{"/etc/resolv.conf", "/etc/hosts"}})
	if code != 0 || !strings.Contains(out, "nameserver ") || !strings.Contains(out, sb.ID) {
		t.Errorf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

// userImage is the busybox image with the image config's User set and, in
// a layer of its own, an /etc/passwd and /etc/group naming app (1234) and
// appgrp (2345), and app's home, owned by app (as useradd -m makes it:
// what the API writes without sudo, it writes as the user).
func userImage(t *testing.T, user string) v1.Image {
	t.Helper()
	base := imagetest.Layer(t, func(tw *tar.Writer) {
		imagetest.WriteBusybox(t, tw, "sh", "cat", "id", "pwd", "echo", "mkdir", "stat", "ln", "rm", "chown", "[", "test", "readlink")
	})
	users := imagetest.Layer(t, func(tw *tar.Writer) {
		imagetest.Dir(t, tw, "etc/")
		imagetest.File(t, tw, "etc/passwd", []byte("root:x:0:0:root:/root:/bin/sh\n"+
			"user:x:1000:1000:user:/home/user:/bin/sh\n"+
			"app:x:1234:2345::/home/app:/bin/sh\n"), 0o644)
		imagetest.File(t, tw, "etc/group", []byte("root:x:0:\nappgrp:x:2345:\n"), 0o644)
		imagetest.Dir(t, tw, "home/")
		if err := tw.WriteHeader(&tar.Header{Name: "home/app/", Typeflag: tar.TypeDir, Mode: 0o755, Uid: 1234, Gid: 2345}); err != nil {
			t.Fatal(err)
		}
	})
	return imagetest.WithUser(t, imagetest.Image(t, []string{"PATH=/bin"}, "", base, users), user)
}

// TestImageUser: the image config's User is who commands run as. Numeric
// ids need no passwd entry; a name resolves in the image's own /etc/passwd
// and /etc/group, giving the home too; files written through the API, a
// source checkout, mkdir and a fresh volume's root belong to that user;
// sudo is still root; a fork keeps the user; a name the image lacks fails
// the create with a 400 and leaves no sandbox.
func TestImageUser(t *testing.T) {
	requireSandboxes(t)
	reg := imagetest.Registry(t)
	refs := map[string]string{"numeric": reg + "/e2e/user:numeric", "named": reg + "/e2e/user:named", "unknown": reg + "/e2e/user:unknown"}
	imagetest.Push(t, refs["numeric"], userImage(t, "1234:1234"))
	imagetest.Push(t, refs["named"], userImage(t, "app"))
	imagetest.Push(t, refs["unknown"], userImage(t, "nosuch"))
	src := tgz(t,
		tar.Header{Typeflag: tar.TypeReg, Name: "README", Linkname: "hello\n", Mode: 0o644},
		tar.Header{Typeflag: tar.TypeSymlink, Name: "passwd", Linkname: "/etc/passwd"},
	)
	srcURL := serveBytes(t, map[string][]byte{"/src.tgz": src}) + "/src.tgz"

	s := startStack(t, newDataDir(t), stackOptions{})
	ctx := ctxFor(t, 3*time.Minute)
	for _, ref := range refs {
		if _, err := s.client.PullImage(ctx, api.PullImageRequest{Ref: ref, Insecure: true}, nil); err != nil {
			t.Fatalf("pull %s: %v", ref, err)
		}
	}

	t.Run("numeric", func(t *testing.T) {
		sb := s.create(t, api.CreateSandboxRequest{Image: refs["numeric"]})
		// The gid is the one asked for; the home is passwd's for uid 1234.
		if u := sb.User; sb.ImageUser != "1234:1234" || u == nil || *u != (api.SandboxUser{UID: 1234, GID: 1234, Home: "/home/app"}) {
			t.Errorf("imageUser %q, user %+v", sb.ImageUser, sb.User)
		}
		if out, code := sh(t, sb, "id -u; id -g; echo $HOME; pwd"); code != 0 || out != "1234\n1234\n/home/app\n/home/app\n" {
			t.Errorf("exit %d, stdout %q", code, out)
		}
	})

	t.Run("named", func(t *testing.T) {
		req := api.CreateSandboxRequest{Image: refs["named"], Source: &api.Source{Type: api.SourceTarball, URL: srcURL}}
		withVolume := volume.Available() == ""
		if withVolume {
			if _, err := s.client.CreateVolume(ctx, "appvol", 0); err != nil {
				t.Fatal(err)
			}
			req.Volumes = []api.VolumeMount{{Volume: "appvol", Path: "/data"}}
		}
		sb := s.create(t, req)
		if u := sb.User; sb.ImageUser != "app" || u == nil || *u != (api.SandboxUser{UID: 1234, GID: 2345, Home: "/home/app"}) {
			t.Errorf("imageUser %q, user %+v", sb.ImageUser, sb.User)
		}
		if sb.Source == nil || sb.Source.Dir != "/home/app" {
			t.Errorf("source landed in %+v, want /home/app", sb.Source)
		}
		if out, code := sh(t, sb, "id -u; id -g; echo $HOME; pwd"); code != 0 || out != "1234\n2345\n/home/app\n/home/app\n" {
			t.Errorf("exit %d, stdout %q", code, out)
		}
		if _, err := sb.WriteFiles(ctx, "/home/app/up", []sdk.File{{Path: "f.txt", Content: []byte("x"), Mode: 0o644}}); err != nil {
			t.Fatal(err)
		}
		if err := sb.MkDir(ctx, "/home/app/made", false); err != nil {
			t.Fatal(err)
		}
		out, code := sh(t, sb, "mkdir /tmp/bysh && stat -c '%u:%g %n' /home/app/up /home/app/up/f.txt /home/app/made /tmp/bysh /home/app/README /home/app/passwd")
		want := "1234:2345 /home/app/up\n1234:2345 /home/app/up/f.txt\n1234:2345 /home/app/made\n1234:2345 /tmp/bysh\n" +
			"1234:2345 /home/app/README\n1234:2345 /home/app/passwd\n"
		if code != 0 || out != want {
			t.Errorf("owners: exit %d\n%s\nwant\n%s", code, out, want)
		}
		if withVolume {
			if out, code := sh(t, sb, "stat -c '%u:%g' /data && echo x > /data/kept"); code != 0 || out != "1234:2345\n" {
				t.Errorf("fresh volume root: exit %d, %q; want 1234:2345 and writable", code, out)
			}
		}
		if out, _, code := run(t, sb, api.CommandRequest{Cmd: "id", Args: []string{"-u"}, Sudo: true}); code != 0 || out != "0\n" {
			t.Errorf("sudo id -u: exit %d, %q", code, out)
		}

		fork, err := sb.Fork(ctx, nil)
		if err != nil {
			t.Fatalf("fork: %v", err)
		}
		if u := fork.User; u == nil || *u != (api.SandboxUser{UID: 1234, GID: 2345, Home: "/home/app"}) {
			t.Errorf("fork user %+v", fork.User)
		}
		if out, code := sh(t, fork, "id -u; id -g; cat /home/app/up/f.txt"); code != 0 || out != "1234\n2345\nx" {
			t.Errorf("fork: exit %d, stdout %q", code, out)
		}
		deleteSandbox(t, fork)
		deleteSandbox(t, sb)
	})

	t.Run("unknown", func(t *testing.T) {
		ae := wantCreateError(t, s, api.CreateSandboxRequest{Image: refs["unknown"]}, http.StatusBadRequest, "image_user_unknown")
		if !strings.Contains(ae.Message, "nosuch") {
			t.Errorf("message %q does not name the user", ae.Message)
		}
	})
}

// TestImageUserRestart: a sandbox re-adopted after a paddock restart keeps
// its resolved user, in its record and in the commands it runs.
func TestImageUserRestart(t *testing.T) {
	requireSandboxes(t)
	ref := imagetest.Registry(t) + "/e2e/user:restart"
	imagetest.Push(t, ref, userImage(t, "app"))
	dir := newDataDir(t)
	first := startStack(t, dir, stackOptions{})
	ctx := ctxFor(t, 2*time.Minute)
	if _, err := first.client.PullImage(ctx, api.PullImageRequest{Ref: ref, Insecure: true}, nil); err != nil {
		t.Fatalf("pull: %v", err)
	}
	id := first.create(t, api.CreateSandboxRequest{Image: ref}).ID
	first.shutdown(t)

	second := startStack(t, dir, stackOptions{})
	sb, err := second.client.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if sb.Status != api.StatusRunning || sb.User == nil || *sb.User != (api.SandboxUser{UID: 1234, GID: 2345, Home: "/home/app"}) {
		t.Fatalf("after restart: %s, user %+v", sb.Status, sb.User)
	}
	if out, code := sh(t, sb, "id -u; echo $HOME"); code != 0 || out != "1234\n/home/app\n" {
		t.Errorf("after restart: exit %d, stdout %q", code, out)
	}
}

// TestImageRefsPerTeam is the regression test of a live hole: a member of
// team B imported a docker archive tagged python:3.12 and so repointed the
// host-wide tag team A's admin had imported; team A's next sandbox ran B's
// files. Refs now belong to a team: B's import makes B's own ref, A keeps
// running A's image, and nothing of A's is visible or usable from B.
func TestImageRefsPerTeam(t *testing.T) {
	requireSandboxes(t)
	s := startStack(t, newDataDir(t), stackOptions{})
	ctx := ctxFor(t, 2*time.Minute)
	adminA, memberB := s.teamClient(t, "a", store.RoleAdmin), s.teamClient(t, "b", store.RoleMember)

	const tag = "python:3.12"
	imgA := importWho(t, adminA, tag, "a", "SECRET=team-a")
	imgB := importWho(t, memberB, tag, "b", "")
	if imgA.Digest == imgB.Digest || imgA.Published || imgB.Published {
		t.Fatalf("imports: a %+v, b %+v", imgA, imgB)
	}
	for _, c := range []struct {
		name   string
		client *sdk.Client
		want   string
	}{{"team a", adminA, "a"}, {"team b", memberB, "b"}} {
		sb, err := c.client.Create(ctx, api.CreateSandboxRequest{Image: tag})
		if err != nil {
			t.Fatalf("%s: create: %v", c.name, err)
		}
		if out, code := sh(t, sb, "cat /who"); code != 0 || out != c.want+"\n" {
			t.Errorf("%s's sandbox from %s runs %q (exit %d), want %q", c.name, tag, out, code, c.want)
		}
		deleteSandbox(t, sb)
	}

	// Team B neither sees nor uses team A's image, even by its digest.
	list, err := memberB.ListImages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, img := range list {
		if img.Digest == imgA.Digest || len(img.Config.Env) > 0 {
			t.Errorf("team b lists %+v", img)
		}
	}
	if _, err := memberB.GetImage(ctx, imgA.Digest); !sdk.IsCode(err, "image_not_found") {
		t.Errorf("team b gets team a's digest: %v, want image_not_found", err)
	}
	if _, err := memberB.Create(ctx, api.CreateSandboxRequest{Image: imgA.Digest}); !sdk.IsCode(err, "image_not_found") {
		t.Errorf("team b creates from team a's digest: %v, want image_not_found", err)
	}
	if err := memberB.RemoveImage(ctx, imgA.Digest); !sdk.IsCode(err, "image_not_found") {
		t.Errorf("team b removes team a's digest: %v, want image_not_found", err)
	}
	// Only the host admin publishes.
	if _, err := memberB.ImportImage(ctx, bytes.NewReader(whoArchive(t, tag, "b", "")), sdk.Published()); !sdk.IsCode(err, "host_admin_required") {
		t.Errorf("a member publishes: %v, want host_admin_required", err)
	}
}

// teamClient makes a team named name with a token of role and returns a
// client that uses it.
func (s *stack) teamClient(t *testing.T, name, role string) *sdk.Client {
	t.Helper()
	return s.newTenant(t, name, role).client
}

// tenant is a team of the stack with one token.
type tenant struct {
	teamID, token string
	client        *sdk.Client
}

// newTenant makes a team named name with a token of role.
func (s *stack) newTenant(t *testing.T, name, role string) tenant {
	t.Helper()
	team, err := s.auth.CreateTeam(t.Context(), name)
	if err != nil {
		t.Fatal(err)
	}
	secret, _, err := s.auth.CreateToken(t.Context(), team.ID, "", name+"-"+role, role, 0)
	if err != nil {
		t.Fatal(err)
	}
	return tenant{teamID: team.ID, token: secret, client: sdk.New(s.http.URL, secret)}
}

// whoArchive is a docker archive tagged tag of a busybox image whose /who
// says who built it.
func whoArchive(t *testing.T, tag, who, env string) []byte {
	t.Helper()
	layer := imagetest.Layer(t, func(tw *tar.Writer) {
		imagetest.WriteBusybox(t, tw, "sh", "cat")
		imagetest.File(t, tw, "who", []byte(who+"\n"), 0o644)
	})
	var envs []string
	if env != "" {
		envs = []string{env}
	}
	img := imagetest.Image(t, append(envs, "PATH=/bin"), "/", layer)
	ref, err := name.NewTag(tag)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := tarball.Write(ref, img, &buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func importWho(t *testing.T, c *sdk.Client, tag, who, env string) api.Image {
	t.Helper()
	img, err := c.ImportImage(ctxFor(t, time.Minute), bytes.NewReader(whoArchive(t, tag, who, env)))
	if err != nil {
		t.Fatalf("import as %s: %v", who, err)
	}
	return img
}
