package k8stest_test

import (
	"archive/tar"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/paddock-dev/paddock/internal/imagetest"
	"github.com/paddock-dev/paddock/internal/k8stest"
)

func TestMain(m *testing.M) { os.Exit(k8stest.Main(m)) }

// TestSmoke: a Pod from an imported image runs; exec works with stdout,
// stdin and exit codes; the host reaches a server in the Pod at its Pod
// IP; a Pod from an image in a registry on loopback runs too; deleting the
// namespace leaves no container and no veth behind.
func TestSmoke(t *testing.T) {
	c := k8stest.Require(t)
	bridgeBefore := bridgePorts(t)

	t.Run("imported", func(t *testing.T) {
		ns := c.Namespace(t)
		const ref = "docker.io/paddock/busybox:smoke"
		c.ImportImage(t, ref, imagetest.Image(t, []string{"PATH=/bin"}, "/", busyboxLayer(t)))
		pod := createPod(t, c, ns, "web", ref, corev1.PullNever,
			"mkdir -p /www && echo hello-from-pod >/www/index.html && exec httpd -f -p 8080 -h /www")
		p := c.WaitRunning(t, ns, pod)

		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for _, tc := range []struct {
			name  string
			cmd   []string
			stdin string
			want  k8stest.ExecResult
		}{
			{name: "stdout", cmd: []string{"cat", "/www/index.html"}, want: k8stest.ExecResult{Stdout: "hello-from-pod\n"}},
			{name: "stdin", cmd: []string{"cat"}, stdin: "ping\n", want: k8stest.ExecResult{Stdout: "ping\n"}},
			{name: "stderr and exit code", cmd: []string{"sh", "-c", "echo oops >&2; exit 3"}, want: k8stest.ExecResult{Stderr: "oops\n", ExitCode: 3}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				var stdin io.Reader
				if tc.stdin != "" {
					stdin = strings.NewReader(tc.stdin)
				}
				got, err := c.Exec(ctx, ns, pod, "main", tc.cmd, stdin)
				if err != nil {
					t.Fatalf("exec %q: %v", tc.cmd, err)
				}
				if got != tc.want {
					t.Fatalf("exec %q = %+v, want %+v", tc.cmd, got, tc.want)
				}
			})
		}

		// The host reaches the Pod at its Pod IP over the node's bridge.
		url := "http://" + net.JoinHostPort(p.Status.PodIP, "8080") + "/"
		body := getEventually(t, url)
		if body != "hello-from-pod\n" {
			t.Fatalf("GET %s = %q", url, body)
		}
	})

	t.Run("pulled from a local registry", func(t *testing.T) {
		ns := c.Namespace(t)
		host := imagetest.Registry(t)
		c.TrustRegistry(t, host)
		ref := host + "/paddock/busybox:smoke"
		imagetest.Push(t, ref, imagetest.Image(t, []string{"PATH=/bin"}, "/", busyboxLayer(t)))
		pod := createPod(t, c, ns, "pulled", ref, corev1.PullAlways, "exec sleep 3600")
		c.WaitRunning(t, ns, pod)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		got, err := c.Exec(ctx, ns, pod, "main", []string{"echo", "pulled"}, nil)
		if err != nil || got.Stdout != "pulled\n" {
			t.Fatalf("exec = %+v, %v", got, err)
		}
	})

	// Both namespaces are gone and their containers stopped; the Pods'
	// veths go with their sandboxes' network, a moment after the sandbox
	// stops.
	deadline := time.Now().Add(15 * time.Second)
	for after := bridgePorts(t); after != bridgeBefore; after = bridgePorts(t) {
		if time.Now().After(deadline) {
			t.Fatalf("veths on the cluster bridge: %d before, %d after", bridgeBefore, after)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// busyboxLayer is a one-layer userland: a shell, an HTTP server and the
// tools the smoke test runs.
func busyboxLayer(t *testing.T) v1.Layer {
	t.Helper()
	return imagetest.Layer(t, func(tw *tar.Writer) {
		imagetest.WriteBusybox(t, tw, "sh", "cat", "echo", "httpd", "mkdir", "sleep")
		imagetest.Dir(t, tw, "tmp/")
	})
}

// createPod starts a Pod with one container "main" running script in sh.
func createPod(t *testing.T, c *k8stest.Cluster, ns, name, image string, pull corev1.PullPolicy, script string) string {
	t.Helper()
	grace := int64(1)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: &grace,
			AutomountServiceAccountToken:  new(bool),
			Containers: []corev1.Container{{
				Name: "main", Image: image, ImagePullPolicy: pull,
				Command: []string{"/bin/sh", "-c", script},
			}},
		},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create pod: %v", err)
	}
	return name
}

// getEventually GETs url until it answers (the server may take a moment to
// listen after the container starts), for at most 20 s.
func getEventually(t *testing.T, url string) string {
	t.Helper()
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := client.Get(url)
		if err == nil {
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			return string(body)
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: %v", url, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// bridgePorts counts the links on the cluster's Pod bridge (one veth per
// running Pod).
func bridgePorts(t *testing.T) int {
	t.Helper()
	out, err := exec.Command("ip", "-o", "link", "show", "master", "pdk8sbr0").Output()
	if err != nil {
		return 0 // no bridge yet: no Pod has run
	}
	return strings.Count(strings.TrimSpace(string(out)), "\n") + min(1, len(strings.TrimSpace(string(out))))
}
