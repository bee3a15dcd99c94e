package main

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestTable(t *testing.T) {
	var out bytes.Buffer
	tab := newTable(&out, "NAME", "SIZE")
	tab.row("a", 1)
	tab.row("longer", "2MB")
	if err := tab.flush(); err != nil {
		t.Fatal(err)
	}
	want := "NAME    SIZE\na       1\nlonger  2MB\n"
	if out.String() != want {
		t.Errorf("table =\n%q\nwant\n%q", out.String(), want)
	}
}

// TestSubcommandUsage: every noun built on subcommand words its usage
// errors alike, and an alias takes its verb's flags.
func TestSubcommandUsage(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no verb", []string{"volume"}, "volume: missing subcommand (create, ls, rm)"},
		{"unknown verb", []string{"image", "bogus"}, `image: unknown subcommand "bogus"`},
		{"too many args", []string{"volume", "ls", "x"}, "volume ls: want no arguments"},
		{"missing arg", []string{"image", "rm"}, "image rm: want <ref>"},
		{"bad flag", []string{"project", "get", "--nope", "x"}, "project get: flag provided but not defined: -nope"},
		{"bad size", []string{"volume", "create", "--size", "lots", "v"}, "volume create: --size: "},
		{"alias flags", []string{"token", "new", "--ttl", "1ms", "x"}, "token create: --ttl must be at least 1s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			err := run(t.Context(), tt.args, &out, &errOut)
			var u *usageError
			if !errors.As(err, &u) || !strings.HasPrefix(err.Error(), tt.want) {
				t.Errorf("run(%q) = %v, want a usage error starting %q", tt.args, err, tt.want)
			}
		})
	}
}
