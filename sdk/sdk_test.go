package sdk

import (
	"errors"
	"testing"
)

func TestAPIErrorIs(t *testing.T) {
	tests := []struct {
		name   string
		err    *APIError
		target error
		want   bool
	}{
		{"404", &APIError{Status: 404, Code: "sandbox_not_found"}, ErrNotFound, true},
		{"404 is not 409", &APIError{Status: 404}, ErrConflict, false},
		{"not running", &APIError{Status: 409, Code: "sandbox_not_running"}, ErrNotRunning, true},
		{"conflict is not not-running", &APIError{Status: 409, Code: "conflict"}, ErrNotRunning, false},
		{"401", &APIError{Status: 401, Code: "invalid_token"}, ErrUnauthorized, true},
		{"413", &APIError{Status: 413}, ErrTooLarge, true},
		{"429", &APIError{Status: 429}, ErrRateLimited, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := errors.Is(error(tt.err), tt.target); got != tt.want {
				t.Errorf("errors.Is = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestTarName(t *testing.T) {
	tests := []struct {
		dir, path, want string
		ok              bool
	}{
		{"/work", "a.txt", "a.txt", true},
		{"/work", "sub/./b", "sub/b", true},
		{"/", "/etc/x", "etc/x", true},
		{"/work", "/etc/x", "", false},
		{"/work", "../x", "", false},
		{"/work", "a/../../x", "", false},
		{"/work", "", "", false},
		{"/work", ".", "", false},
		{"/work", "a\x00b", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.dir+"|"+tt.path, func(t *testing.T) {
			got, err := tarName(tt.dir, tt.path)
			if tt.ok != (err == nil) || got != tt.want {
				t.Errorf("tarName = %q, %v", got, err)
			}
		})
	}
}

func TestParents(t *testing.T) {
	got := parents("a/b/c.txt")
	if len(got) != 2 || got[0] != "a" || got[1] != "a/b" {
		t.Errorf("parents = %v", got)
	}
}
