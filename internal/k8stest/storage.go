package k8stest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// StorageClass makes a StorageClass with no provisioner and n static
// PersistentVolumes of it, each a directory of this machine (the node)
// of the given capacity, so that claims of the class bind: the test
// cluster has no dynamic provisioner. A claim binds when its first Pod is
// scheduled (WaitForFirstConsumer), so claims no Pod mounts take none.
// The class, the volumes and their directories go when tb ends: call it
// before Namespace, whose cleanup (the claims bound to the volumes with
// it) must run first.
func (c *Cluster) StorageClass(tb testing.TB, n int, capacity string) string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var raw [4]byte
	_, _ = rand.Read(raw[:])
	class := "paddock-test-" + hex.EncodeToString(raw[:])
	wait := storagev1.VolumeBindingWaitForFirstConsumer
	retain := corev1.PersistentVolumeReclaimRetain
	_, err := c.Client.StorageV1().StorageClasses().Create(ctx, &storagev1.StorageClass{
		ObjectMeta:  metav1.ObjectMeta{Name: class, Labels: map[string]string{"paddock.dev/test": "true"}},
		Provisioner: "kubernetes.io/no-provisioner", VolumeBindingMode: &wait, ReclaimPolicy: &retain,
	}, metav1.CreateOptions{})
	if err != nil {
		tb.Fatalf("create storage class: %v", err)
	}
	dir := tb.TempDir()
	// Root's, as a new volume's root usually is; 0755 for the node.
	if err := os.Chmod(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	var pvs []string
	// Registered after TempDir, so it runs before the directories go.
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		for _, pv := range pvs {
			if err := c.Client.CoreV1().PersistentVolumes().Delete(ctx, pv, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
				tb.Errorf("delete persistent volume %s: %v", pv, err)
			}
		}
		for _, pv := range pvs {
			c.poll(ctx, tb, "persistent volume "+pv+" gone", func() (bool, error) {
				_, err := c.Client.CoreV1().PersistentVolumes().Get(ctx, pv, metav1.GetOptions{})
				if apierrors.IsNotFound(err) {
					return true, nil
				}
				return false, err
			})
		}
		if err := c.Client.StorageV1().StorageClasses().Delete(ctx, class, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			tb.Errorf("delete storage class %s: %v", class, err)
		}
	})
	for i := range n {
		path := filepath.Join(dir, strconv.Itoa(i))
		if err := os.Mkdir(path, 0o755); err != nil {
			tb.Fatal(err)
		}
		dirType := corev1.HostPathDirectory
		pv, err := c.Client.CoreV1().PersistentVolumes().Create(ctx, &corev1.PersistentVolume{
			ObjectMeta: metav1.ObjectMeta{Name: class + "-" + strconv.Itoa(i), Labels: map[string]string{"paddock.dev/test": "true"}},
			Spec: corev1.PersistentVolumeSpec{
				StorageClassName:              class,
				Capacity:                      corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(capacity)},
				AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				PersistentVolumeReclaimPolicy: retain,
				PersistentVolumeSource:        corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: path, Type: &dirType}},
			},
		}, metav1.CreateOptions{})
		if err != nil {
			tb.Fatalf("create persistent volume: %v", err)
		}
		pvs = append(pvs, pv.Name)
	}
	return class
}
