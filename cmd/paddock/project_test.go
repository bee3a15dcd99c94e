package main

import (
	"bytes"
	"testing"
)

func TestProjectUsage(t *testing.T) {
	var out, errOut bytes.Buffer
	for _, args := range [][]string{
		{"project"},
		{"project", "bogus"},
		{"project", "create", "x"}, // no source
		{"project", "create", "--image", "i", "--git", "g", "x"}, // two sources
		{"project", "get"},
		{"demo", "extra"},
	} {
		if err := run(t.Context(), args, &out, &errOut); exitCode(err, &errOut) != 2 {
			t.Errorf("%q: %v, want a usage error", args, err)
		}
	}
}
