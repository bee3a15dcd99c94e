package sandbox

import (
	"errors"
	"strings"
	"testing"
)

func TestValidateLabels(t *testing.T) {
	many := map[string]string{}
	for i := range MaxLabels + 1 {
		many[strings.Repeat("k", i+1)] = "v"
	}
	for _, tc := range []struct {
		name   string
		labels map[string]string
		ok     bool
	}{
		{"none", nil, true},
		{"plain", map[string]string{"env": "prod", "team.example.com/app": "web-1", "x": ""}, true},
		{"empty key", map[string]string{"": "v"}, false},
		{"key starts with a dash", map[string]string{"-k": "v"}, false},
		{"space in key", map[string]string{"a b": "v"}, false},
		{"key too long", map[string]string{strings.Repeat("k", MaxLabelKeyLen+1): "v"}, false},
		{"newline in value", map[string]string{"k": "a\nb"}, false},
		{"non-ASCII value", map[string]string{"k": "é"}, false},
		{"value too long", map[string]string{"k": strings.Repeat("v", MaxLabelValueLen+1)}, false},
		{"too many", many, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateLabels(tc.labels)
			if tc.ok != (err == nil) || (err != nil && !errors.Is(err, ErrInvalid)) {
				t.Errorf("ValidateLabels = %v, want ok %v", err, tc.ok)
			}
		})
	}
}

func TestParseLabelSelectors(t *testing.T) {
	got, err := ParseLabelSelectors([]string{"env=prod", "app=a=b", "empty="})
	if err != nil || len(got) != 3 || got["app"] != "a=b" || got["empty"] != "" {
		t.Errorf("parse = %v, %v", got, err)
	}
	for _, bad := range [][]string{{"novalue"}, {"k=1", "k=2"}, {"bad key=v"}} {
		if _, err := ParseLabelSelectors(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("%q: %v, want invalid", bad, err)
		}
	}
	if !MatchLabels(map[string]string{"a": "1", "b": "2"}, map[string]string{"a": "1"}) ||
		MatchLabels(map[string]string{"a": "1"}, map[string]string{"a": "2"}) ||
		MatchLabels(nil, map[string]string{"a": ""}) {
		t.Error("MatchLabels")
	}
}
