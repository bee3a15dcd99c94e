package kubernetes

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// TestImagePullSecret: a sandbox's image in a registry that wants a login
// is pulled by the node with the Secret the driver names (Config.
// ImagePullSecrets, --k8s-image-pull-secret), and a driver that names none
// fails the create with the pull's reason.
func TestImagePullSecret(t *testing.T) {
	e := testEnv(t)
	const user, pass = "paddock", "pull-secret-test"
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != user || p != pass {
			w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	e.c.TrustRegistry(t, host)

	// The host image, copied into the private registry.
	src, err := name.ParseReference(e.hostImage, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(src)
	if err != nil {
		t.Fatal(err)
	}
	private := host + "/paddock/private:1"
	dst, err := name.ParseReference(private, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(dst, img, remote.WithAuth(&authn.Basic{Username: user, Password: pass})); err != nil {
		t.Fatal(err)
	}

	newDriver := func(secrets ...string) *Driver {
		ns := e.c.Namespace(t)
		if len(secrets) > 0 {
			auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
			cfg, _ := json.Marshal(map[string]any{"auths": map[string]any{host: map[string]string{"auth": auth}}})
			s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: secrets[0], Namespace: ns}, Type: corev1.SecretTypeDockerConfigJson,
				Data: map[string][]byte{corev1.DockerConfigJsonKey: cfg}}
			if _, err := e.c.Client.CoreV1().Secrets(ns).Create(t.Context(), s, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		d, err := New(Config{Client: e.c.Client, Namespace: ns, AgentImage: e.agentImage, ImagePullSecrets: secrets,
			RequestFraction: 0.02, CgroupVersion: 1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := d.Close(); err != nil {
				t.Error(err)
			}
		})
		return d
	}
	spec := runtime.Spec{ID: "k8s-pull-secret", Image: private, Resources: sandbox.Resources{VCPUs: 1, MemoryMB: 128, PIDs: 64}}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	with := newDriver("regcred")
	cl, err := with.Create(ctx, spec)
	if err != nil {
		t.Fatalf("create with the pull secret: %v", err)
	}
	defer with.Destroy(context.WithoutCancel(ctx), spec.ID)
	if _, err := cl.Ping(ctx); err != nil {
		t.Fatalf("the agent of a Pod of the private image: %v", err)
	}

	without := newDriver()
	if _, err := without.Create(ctx, spec); !errors.Is(err, sandbox.ErrInvalid) || sandbox.CodeOf(err) != "image_pull" {
		without.Destroy(context.WithoutCancel(ctx), spec.ID)
		t.Fatalf("create without the pull secret = %v, want ErrInvalid image_pull", err)
	}
}
