package e2e

import (
	"bytes"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/sdk"
)

// TestSnapshotAndFork snapshots a host-image sandbox with files of every
// kind in its writable layer, creates a sandbox from the snapshot, forks a
// running sandbox, and checks that a hostile upper dir is copied without
// anything on the host being followed.
func TestSnapshotAndFork(t *testing.T) {
	s := startStack(t, newDataDir(t), stackOptions{})
	ctx := ctxFor(t, 3*time.Minute)
	passwdBefore, err := os.ReadFile("/etc/passwd")
	if err != nil {
		t.Fatal(err)
	}
	passwdStat, _ := os.Stat("/etc/passwd")

	src := s.create(t, api.CreateSandboxRequest{Env: map[string]string{"FROM_SRC": "yes"}})
	if out, code := sh(t, src, "test -e /etc/shells && echo present"); code != 0 || out != "present\n" {
		t.Fatalf("the host image has no /etc/shells: %q, exit %d", out, code)
	}
	setup := `set -e
mkdir -p ~/bin && printf '#!/bin/sh\necho hello-from-snapshot\n' > ~/bin/hello && chmod 0755 ~/bin/hello
ln -s hello ~/bin/link
echo data > ~/data.txt
echo gone > ~/tmpfile && rm ~/tmpfile
ln -s /etc/passwd ~/evil
ln -s / ~/rootlink
mkfifo ~/fifo
`
	if out, code := sh(t, src, setup); code != 0 {
		t.Fatalf("setup: exit %d %q", code, out)
	}
	root := `set -e
rm /etc/shells
mkdir -p /opt/x && echo r > /opt/x/f && chmod 0640 /opt/x/f
rm -rf /etc/ld.so.conf.d && mkdir /etc/ld.so.conf.d && touch /etc/ld.so.conf.d/new.conf
`
	if _, errOut, code := run(t, src, api.CommandRequest{Cmd: "sh", Args: []string{"-c", root}, Sudo: true}); code != 0 {
		t.Fatalf("root setup: exit %d %q", code, errOut)
	}

	snap, err := src.Snapshot(ctx)
	if err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	if !strings.HasPrefix(snap.ID, "snap-") || snap.SourceSandboxID != src.ID || snap.SizeBytes <= 0 || snap.ExpiresAt.IsZero() {
		t.Errorf("snapshot = %+v", snap)
	}
	if got, err := s.client.GetSnapshot(ctx, snap.ID); err != nil || got.ID != snap.ID {
		t.Errorf("get snapshot = %+v, %v", got, err)
	}
	if list, err := s.client.ListSnapshots(ctx); err != nil || len(list) != 1 || list[0].ID != snap.ID {
		t.Errorf("list snapshots = %+v, %v", list, err)
	}

	// The hostile entries are in the layer as what they are; the host's
	// file they point at is untouched.
	stored, err := s.images.GetSnapshot(snap.ID)
	if err != nil {
		t.Fatal(err)
	}
	layer := stored.Layers[0]
	if target, err := os.Readlink(filepath.Join(layer, "home/user/evil")); err != nil || target != "/etc/passwd" {
		t.Errorf("evil symlink in the layer: %q, %v", target, err)
	}
	if fi, err := os.Lstat(filepath.Join(layer, "home/user/fifo")); err != nil || fi.Mode()&os.ModeNamedPipe == 0 {
		t.Errorf("fifo in the layer: %v, %v", fi, err)
	}
	for _, own := range []string{".paddock", "run/paddock"} {
		if _, err := os.Lstat(filepath.Join(layer, own)); err == nil {
			t.Errorf("the layer holds paddock's own %s", own)
		}
	}
	if after, _ := os.ReadFile("/etc/passwd"); !bytes.Equal(after, passwdBefore) {
		t.Errorf("the host's /etc/passwd changed")
	}
	if fi, _ := os.Stat("/etc/passwd"); !fi.ModTime().Equal(passwdStat.ModTime()) {
		t.Errorf("the host's /etc/passwd was touched")
	}

	if _, err := s.client.Create(ctx, api.CreateSandboxRequest{Image: "host", Snapshot: snap.ID}); !isStatus(err, http.StatusBadRequest) {
		t.Errorf("create with image and snapshot: %v, want 400", err)
	}

	restored := s.create(t, api.CreateSandboxRequest{Snapshot: snap.ID})
	if restored.SnapshotID != snap.ID {
		t.Errorf("restored sandbox's snapshot = %q", restored.SnapshotID)
	}
	check := `stat -c '%a' ~/bin/hello; ~/bin/hello; readlink ~/bin/link; cat ~/data.txt
test -e ~/tmpfile && echo tmpfile-back; test -e /etc/shells && echo shells-back
readlink ~/evil; test -p ~/fifo && echo fifo
stat -c '%U %a' /opt/x/f; ls /etc/ld.so.conf.d; echo $FROM_SRC`
	want := "755\nhello-from-snapshot\nhello\ndata\n/etc/passwd\nfifo\nroot 640\nnew.conf\nyes\n"
	if out, code := sh(t, restored, check); code != 0 || out != want {
		t.Errorf("in the restored sandbox: exit %d\n%s\nwant\n%s", code, out, want)
	}

	// Deleting a snapshot a running sandbox was created from is refused.
	if err := s.client.DeleteSnapshot(ctx, snap.ID); !isStatus(err, http.StatusConflict) {
		t.Errorf("delete snapshot in use: %v, want 409", err)
	}

	// Fork: the fork sees the parent's files; writes do not cross.
	if out, code := sh(t, src, "echo parent-after > ~/later.txt"); code != 0 {
		t.Fatalf("write in parent: %q", out)
	}
	fork, err := src.Fork(ctx, nil)
	if err != nil {
		t.Fatalf("fork: %v", err)
	}
	if fork.Status != api.StatusRunning || fork.ID == src.ID {
		t.Fatalf("fork = %+v", fork.Sandbox)
	}
	if out, code := sh(t, fork, "cat ~/data.txt ~/later.txt; echo fork-only > ~/fork.txt"); code != 0 || out != "data\nparent-after\n" {
		t.Errorf("in the fork: exit %d %q", code, out)
	}
	if out, _ := sh(t, src, "test -e ~/fork.txt && echo leaked; echo ok"); out != "ok\n" {
		t.Errorf("the fork's write shows in the parent: %q", out)
	}
	if out, code := sh(t, src, "~/bin/hello"); code != 0 || out != "hello-from-snapshot\n" {
		t.Errorf("the parent after being snapshotted: exit %d %q", code, out)
	}

	// Once no running sandbox uses it, the snapshot goes, and its layer
	// with it when no sandbox stacks it any more.
	if err := restored.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.client.DeleteSnapshot(ctx, snap.ID); err != nil {
		t.Fatalf("delete snapshot: %v", err)
	}
	if _, err := s.client.GetSnapshot(ctx, snap.ID); !isStatus(err, http.StatusNotFound) {
		t.Errorf("get deleted snapshot: %v, want 404", err)
	}
	if _, err := os.Lstat(layer); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the deleted snapshot's layer %s is still there (%v)", layer, err)
	}
}

func isStatus(err error, status int) bool {
	var ae *sdk.APIError
	return errors.As(err, &ae) && ae.Status == status
}
