package deploy_test

import (
	"context"
	"encoding/json"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/examples/goose-standin/standinimage"
	"github.com/paddock-dev/paddock/internal/imagetest"
	"github.com/paddock-dev/paddock/internal/k8stest"
	"github.com/paddock-dev/paddock/sdk"
)

// serveRegistry serves an in-memory registry on host (the Pods' gateway:
// the node's containerd and paddock's Pods both reach it there) until t
// ends, and returns its host:port.
func serveRegistry(t *testing.T, host string) string {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return ln.Addr().String()
}

// pushStandin builds the goose stand-in's image and pushes it to ref.
func pushStandin(t *testing.T, ref string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()
	bin, err := standinimage.Build(ctx, "", dir)
	if err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(dir, "standin.tar")
	if err := standinimage.WriteImage(bin, archive, ""); err != nil {
		t.Fatal(err)
	}
	img, err := tarball.ImageFromPath(archive, nil)
	if err != nil {
		t.Fatal(err)
	}
	imagetest.Push(t, ref, img)
}

// testSandboxes is an e2e client of paddock installed from the chart,
// talking to one replica at its Pod IP (a replica serves the sandboxes it
// made: see the README's "On Kubernetes"): a sandbox of the image "host"
// is a Pod in the sandbox namespace, labelled as the replica's, and runs a
// command; one of an image pulled from a registry serves a port reached
// through paddock's port proxy; a project of the goose stand-in activates,
// its app answers through the app proxy with the secret paddock injects,
// and deactivates. Deleting a sandbox removes its Pod.
func testSandboxes(t *testing.T, c *k8stest.Cluster, replica corev1.Pod, token, sandboxNS, standinRef string) {
	base := "http://" + net.JoinHostPort(replica.Status.PodIP, "7420")
	hc := &http.Client{Timeout: 3 * time.Minute}
	client := sdk.New(base, token, sdk.WithHTTPClient(hc))
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()

	rts, err := client.Runtimes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(rts) != 1 || rts[0].Name != "kubernetes" || !rts[0].Default || !rts[0].Available {
		t.Fatalf("runtimes %+v, want kubernetes alone", rts)
	}

	begin := time.Now()
	sb, err := client.Create(ctx, api.CreateSandboxRequest{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("sandbox %s of the host image running after %s", sb.ID, time.Since(begin).Round(time.Millisecond))
	pods, err := c.Client.CoreV1().Pods(sandboxNS).List(ctx, metav1.ListOptions{LabelSelector: "paddock.dev/sandbox=" + sb.ID})
	if err != nil {
		t.Fatal(err)
	}
	if len(pods.Items) != 1 || pods.Items[0].Status.Phase != corev1.PodRunning || pods.Items[0].Labels["paddock.dev/owner"] != replica.Name {
		t.Fatalf("Pods of sandbox %s: %+v, want one running, the replica's", sb.ID, pods.Items)
	}
	if sb.Address != pods.Items[0].Status.PodIP {
		t.Errorf("sandbox address %q, Pod IP %q", sb.Address, pods.Items[0].Status.PodIP)
	}
	cmd, err := sb.RunCommand(ctx, api.CommandRequest{Cmd: "paddock", Args: []string{"version"}})
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.Output(ctx, "stdout")
	if err != nil || cmd.ExitCodeOr(-1) != 0 || !strings.HasPrefix(out, "paddock ") {
		t.Errorf("paddock version in the sandbox: exit %d, %q, %v", cmd.ExitCodeOr(-1), out, err)
	}
	if err := sb.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	if pods, err := c.Client.CoreV1().Pods(sandboxNS).List(ctx, metav1.ListOptions{LabelSelector: "paddock.dev/sandbox=" + sb.ID}); err != nil || len(pods.Items) != 0 {
		t.Errorf("Pods of the deleted sandbox: %v, %v", pods, err)
	}

	// An image from a registry: paddock pulls it for its config, the
	// node pulls it by digest.
	img, err := client.PullImage(ctx, api.PullImageRequest{Ref: standinRef, Insecure: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	const port = 8080
	web, err := client.Create(ctx, api.CreateSandboxRequest{Image: img.Ref, Ports: []api.PortSpec{{Port: port}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := web.RunCommand(ctx, api.CommandRequest{Cmd: standinimage.BinaryPath, Args: []string{"--port", "8080"}, Detached: true}); err != nil {
		t.Fatal(err)
	}
	signed, err := web.SignedURL(ctx, port, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(signed.URL)
	if err != nil || !strings.HasPrefix(u.Host, strconv.Itoa(port)+"-"+web.ID+".") {
		t.Fatalf("signed URL %q (%v): want the port's host", signed.URL, err)
	}
	// The signed URL names paddock's public URL (its port host); this test
	// reaches the replica at its Pod IP, with that Host. The app starts a
	// moment after the command.
	var code int
	var body string
	for range 50 {
		if code, body = getHost(t, base+standinimage.HealthPath+"?"+u.RawQuery, u.Host); code == http.StatusOK {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if code != http.StatusOK || strings.TrimSpace(body) != "ok" {
		t.Errorf("GET %s through the port proxy = %d %q", standinimage.HealthPath, code, body)
	}
	if err := web.Delete(ctx); err != nil {
		t.Fatal(err)
	}

	// A project of the goose stand-in, as `paddock demo` makes one.
	p, err := client.CreateProject(ctx, api.ProjectRequest{Name: "goose", Source: api.ProjectSource{Image: img.Ref},
		AppPort: standinimage.Port, HealthPath: standinimage.HealthPath, PersistentPaths: []string{standinimage.PathRoot},
		AppSecretHeader: "X-Secret-Key", AppSecretEnv: "GOOSE_SERVER__SECRET_KEY"})
	if err != nil {
		t.Fatal(err)
	}
	begin = time.Now()
	act, err := client.ActivateAndWait(ctx, p.ID, nil)
	if err != nil || act.State != api.ActivationReady {
		t.Fatalf("activation: %+v, %v", act, err)
	}
	t.Logf("project activated in %s", time.Since(begin).Round(time.Millisecond))
	req, err := client.AppRequest(ctx, p.ID, http.MethodPost, "/agent/start", strings.NewReader(`{"working_dir":"/tmp"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.DoApp(req)
	if err != nil {
		t.Fatal(err)
	}
	var sess struct {
		ID string `json:"id"`
	}
	err = json.NewDecoder(resp.Body).Decode(&sess)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || err != nil || sess.ID == "" {
		t.Fatalf("POST /agent/start through the app proxy: %d, session %q, %v", resp.StatusCode, sess.ID, err)
	}
	if act, err = client.Deactivate(ctx, p.ID); err != nil || act.State != api.ActivationStopped {
		t.Fatalf("deactivate: %+v, %v", act, err)
	}
}

// forwardAPIServer serves, on host (the Pods' gateway), a TCP relay to the
// API server, which the test cluster binds to loopback and reaches Pods
// through no Service (no kube-proxy), until t ends; it returns host:port.
// TLS passes through: paddock checks the API server's certificate.
func forwardAPIServer(t *testing.T, host, apiServer string) string {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex // guards conns
	conns := map[net.Conn]bool{}
	track := func(c net.Conn, on bool) {
		mu.Lock()
		defer mu.Unlock()
		if on {
			conns[c] = true
		} else {
			delete(conns, c)
		}
	}
	wg.Add(1)
	go func() { // owned: the cleanup closes the listener and waits
		defer wg.Done()
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", apiServer)
			if err != nil {
				in.Close()
				continue
			}
			track(in, true)
			track(out, true)
			wg.Add(2)
			for _, p := range [][2]net.Conn{{in, out}, {out, in}} {
				go func() { // owned: ends when either side closes; the cleanup closes both
					defer wg.Done()
					_, _ = io.Copy(p[0], p[1])
					p[0].Close()
					p[1].Close()
					track(p[0], false)
					track(p[1], false)
				}()
			}
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// podKubeconfig is a kubeconfig for a Pod that reaches the API server at
// server: its ServiceAccount's token and CA, and the name the API
// server's certificate holds.
func podKubeconfig(server string) string {
	const sa = "/var/run/secrets/kubernetes.io/serviceaccount"
	return `apiVersion: v1
kind: Config
clusters:
  - name: test
    cluster:
      server: https://` + server + `
      certificate-authority: ` + sa + `/ca.crt
      tls-server-name: kubernetes.default.svc
users:
  - name: paddock
    user:
      tokenFile: ` + sa + `/token
contexts:
  - name: test
    context: {cluster: test, user: paddock}
current-context: test
`
}

// getHost is GET url with Host host.
func getHost(t *testing.T, url, host string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("GET %s (Host %s): %v", url, host, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}
