package e2e

import (
	"archive/tar"
	"encoding/base64"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/imagetest"
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
