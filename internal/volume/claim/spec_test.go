package claim

import (
	"errors"
	"slices"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	k8sdriver "github.com/paddock-dev/paddock/internal/runtime/kubernetes"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// TestClaimObjects: a volume's claim is of the class, asks the size, and
// is labelled and annotated so that any replica finds whose it is; a claim
// whose annotations say another team or name than its own name is no
// volume; a sandbox Pod naming the claim makes it in use. Against the
// client's fake: the cluster suite (claim_test.go) runs the rest.
func TestClaimObjects(t *testing.T) {
	ctx := t.Context()
	cs := fake.NewClientset()
	m, err := New(Config{Client: cs, Namespace: "sbx", StorageClass: "fast", Owner: "replica-1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{Namespace: "sbx"}); !errors.Is(err, sandbox.ErrInvalid) {
		t.Fatalf("New without a client: %v", err)
	}
	if _, err := m.Create(ctx, "team-a", "cache", 20<<20+1); err != nil {
		t.Fatal(err)
	}
	c, err := cs.CoreV1().PersistentVolumeClaims("sbx").Get(ctx, claimName("team-a", "cache"), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if *c.Spec.StorageClassName != "fast" || c.Spec.Resources.Requests.Storage().Value() != 21<<20 ||
		c.Labels[k8sdriver.LabelManagedBy] != k8sdriver.ManagedBy || c.Labels[labelTeam] != "team-a" || c.Labels[k8sdriver.LabelOwner] != "replica-1" ||
		c.Annotations[annotationName] != "cache" || c.Annotations[annotationTeam] != "team-a" || c.Annotations[annotationSize] != "22020096" {
		t.Fatalf("claim %+v", c)
	}

	// Annotations that do not match the claim's name: no volume of anyone's.
	forged := c.DeepCopy()
	forged.Name, forged.ResourceVersion = claimName("team-b", "cache"), ""
	if _, err := cs.CoreV1().PersistentVolumeClaims("sbx").Create(ctx, forged, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, team := range []string{"team-a", "team-b"} {
		vs, err := m.List(ctx, team)
		if err != nil || len(vs) != map[string]int{"team-a": 1, "team-b": 0}[team] {
			t.Fatalf("list of %s: %+v, %v", team, vs, err)
		}
	}
	if _, err := m.Get(ctx, "team-b", "cache"); !errors.Is(err, sandbox.ErrNotFound) {
		t.Fatalf("get of the forged claim: %v", err)
	}

	// A sandbox Pod naming the claim holds it.
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "sbx-1", Namespace: "sbx",
		Labels: map[string]string{k8sdriver.LabelManagedBy: k8sdriver.ManagedBy}, Annotations: map[string]string{k8sdriver.AnnotationID: "sb-1"}},
		Spec: corev1.PodSpec{Volumes: []corev1.Volume{{Name: "claim-0", VolumeSource: corev1.VolumeSource{
			PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: c.Name}}}}}}
	if _, err := cs.CoreV1().Pods("sbx").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if v, err := m.Get(ctx, "team-a", "cache"); err != nil || !slices.Equal(v.InUseBy(), []string{"sb-1"}) {
		t.Fatalf("in use: %+v, %v", v, err)
	}
	var se *sandbox.Error
	if err := m.Delete(ctx, "team-a", "cache"); !errors.As(err, &se) || se.Code != "volume_in_use" {
		t.Fatalf("delete while mounted: %v", err)
	}
	if d, err := m.Acquire(ctx, "sb-1", "team-a", sandbox.VolumeMount{Volume: "cache", Path: "/c"}); err != nil || d.Claim != c.Name {
		t.Fatalf("the holder's own acquire (a retried create): %+v, %v", d, err)
	}
	if err := cs.CoreV1().Pods("sbx").Delete(ctx, "sbx-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := m.Delete(ctx, "team-a", "cache"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Get(ctx, "team-a", "cache"); !errors.Is(err, sandbox.ErrNotFound) {
		t.Fatalf("get after delete: %v", err)
	}
}

// TestQuotaRaceAcrossReplicas: another replica's create lands between this
// replica's quota check and its own create. The team's cap holds: the
// create that finds the team past it when it checks again is refused, and
// its claim is gone.
func TestQuotaRaceAcrossReplicas(t *testing.T) {
	ctx := t.Context()
	// The other replica's claim, made as that replica makes it.
	elsewhere := fake.NewClientset()
	other, err := New(Config{Client: elsewhere, Namespace: "sbx", TeamMaxVolumes: 1, Owner: "replica-2"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Create(ctx, "team-a", "theirs", 0); err != nil {
		t.Fatal(err)
	}
	theirs, err := elsewhere.CoreV1().PersistentVolumeClaims("sbx").Get(ctx, claimName("team-a", "theirs"), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}

	cs := fake.NewClientset()
	var once sync.Once
	cs.PrependReactor("create", "persistentvolumeclaims", func(k8stesting.Action) (bool, k8sruntime.Object, error) {
		once.Do(func() {
			if err := cs.Tracker().Add(theirs.DeepCopy()); err != nil {
				t.Error(err)
			}
		})
		return false, nil, nil // the create itself goes on
	})
	m, err := New(Config{Client: cs, Namespace: "sbx", TeamMaxVolumes: 1, Owner: "replica-1"})
	if err != nil {
		t.Fatal(err)
	}
	var se *sandbox.Error
	if _, err := m.Create(ctx, "team-a", "ours", 0); !errors.As(err, &se) || se.Code != "volume_quota_exceeded" {
		t.Fatalf("create past the cap, raced: %v", err)
	}
	vs, err := m.List(ctx, "team-a")
	if err != nil || len(vs) != 1 || vs[0].Name != "theirs" {
		t.Fatalf("after the race: %+v, %v", vs, err)
	}
	// Another team's quota is its own.
	if _, err := m.Create(ctx, "team-b", "ours", 0); err != nil {
		t.Fatal(err)
	}
}
