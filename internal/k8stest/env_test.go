package k8stest

import (
	"maps"
	"strings"
	"testing"
)

func TestParseEnv(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      string
		want    map[string]string
		wantErr bool
	}{
		{name: "pairs", in: "KUBECONFIG=/w/admin.kubeconfig\nPADDOCK_K8S_NODE=n\n", want: map[string]string{"KUBECONFIG": "/w/admin.kubeconfig", "PADDOCK_K8S_NODE": "n"}},
		{name: "blank lines and comments", in: "\n# up.sh\nA=1\n\n", want: map[string]string{"A": "1"}},
		{name: "value with =", in: "A=b=c\n", want: map[string]string{"A": "b=c"}},
		{name: "no =", in: "A\n", wantErr: true},
		{name: "no key", in: "=x\n", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseEnv(strings.NewReader(tc.in))
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if !tc.wantErr && !maps.Equal(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}
