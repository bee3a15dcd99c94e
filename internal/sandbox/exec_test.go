package sandbox

import (
	"errors"
	"strings"
	"testing"
)

func TestValidateEnv(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		ok   bool
	}{
		{"none", nil, true},
		{"plain", map[string]string{"PATH": "/bin", "EMPTY": "", "lower_case": "x=y"}, true},
		{"empty name", map[string]string{"": "x"}, false},
		{"= in a name", map[string]string{"A=B": "x"}, false},
		{"NUL in a name", map[string]string{"A\x00": "x"}, false},
		{"NUL in a value", map[string]string{"A": "x\x00y"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateEnv(tt.env)
			if tt.ok != (err == nil) {
				t.Fatalf("ValidateEnv = %v, want ok %v", err, tt.ok)
			}
			if err != nil && (!errors.Is(err, ErrInvalid) || CodeOf(err) != "invalid_env") {
				t.Errorf("error %v (code %q), want ErrInvalid invalid_env", err, CodeOf(err))
			}
		})
	}
}

func TestValidatePath(t *testing.T) {
	tests := []struct {
		name string
		path string
		ok   bool
	}{
		{"root", "/", true},
		{"unclean but safe", "/a//b/./c/", true},
		{"dots in a name", "/a/..b/c..", true},
		{"longest", "/" + strings.Repeat("a", 4095), true},
		{"empty", "", false},
		{"relative", "a/b", false},
		{"dot-dot", "/a/../b", false},
		{"trailing dot-dot", "/a/..", false},
		{"NUL", "/a\x00", false},
		{"too long", "/" + strings.Repeat("a", 4096), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidatePath(tt.path)
			if tt.ok != (err == nil) {
				t.Fatalf("ValidatePath = %v, want ok %v", err, tt.ok)
			}
			if err != nil && CodeOf(err) != "invalid_path" {
				t.Errorf("code %q, want invalid_path", CodeOf(err))
			}
		})
	}
}
