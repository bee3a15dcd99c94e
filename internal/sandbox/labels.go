package sandbox

import (
	"regexp"
	"strings"
	"sync"
)

// Bounds of labels, the key/value metadata of sandboxes and projects.
const (
	MaxLabels        = 32
	MaxLabelKeyLen   = 63
	MaxLabelValueLen = 255
)

// labelKey: a letter or digit first, then letters, digits and ._-/ (a
// Kubernetes-like key, prefix included, kept simple). Values are printable
// ASCII without control characters, empty allowed. Compiled on first use,
// not at init: this package is in the agent, which every sandbox start
// waits for, and never checks a label.
var (
	labelKey   = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._/-]*$`) })
	labelValue = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[\x20-\x7e]*$`) })
)

// ValidateLabels checks a set of labels: at most MaxLabels, keys and values
// of the shapes and lengths above. It is the one label check; the API, node
// and the control plane call it.
func ValidateLabels(labels map[string]string) error {
	if len(labels) > MaxLabels {
		return Errorf(ErrInvalid, "invalid_labels", "at most %d labels, got %d", MaxLabels, len(labels))
	}
	for k, v := range labels {
		if len(k) > MaxLabelKeyLen || !labelKey().MatchString(k) {
			return Errorf(ErrInvalid, "invalid_labels", "label key %q must be 1-%d characters of letters, digits and ._-/, starting with a letter or digit", k, MaxLabelKeyLen)
		}
		if len(v) > MaxLabelValueLen || !labelValue().MatchString(v) {
			return Errorf(ErrInvalid, "invalid_labels", "label %q: value must be at most %d printable ASCII characters", k, MaxLabelValueLen)
		}
	}
	return nil
}

// MatchLabels reports whether labels has every key of want with the same
// value (an empty want matches everything).
func MatchLabels(labels, want map[string]string) bool {
	for k, v := range want {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// ParseLabelSelectors parses "k=v" strings (the API's ?label= and the
// CLI's --label) into a map; a repeated key is ErrInvalid.
func ParseLabelSelectors(in []string) (map[string]string, error) {
	if len(in) == 0 {
		return nil, nil
	}
	out := make(map[string]string, len(in))
	for _, s := range in {
		k, v, ok := strings.Cut(s, "=")
		if !ok {
			return nil, Errorf(ErrInvalid, "invalid_labels", "label %q must be key=value", s)
		}
		if _, dup := out[k]; dup {
			return nil, Errorf(ErrInvalid, "invalid_labels", "label key %q given twice", k)
		}
		out[k] = v
	}
	return out, ValidateLabels(out)
}
