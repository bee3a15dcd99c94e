package main

import (
	"flag"
	"io"
	"testing"
)

func TestPrefixesFlag(t *testing.T) {
	var f prefixesFlag
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Var(&f, "block-cidr", "")
	if err := fs.Parse([]string{"--block-cidr", "10.1.2.3/16", "--block-cidr", "203.0.113.7", "--block-cidr", "fd00::/8"}); err != nil {
		t.Fatal(err)
	}
	if got := f.String(); got != "10.1.0.0/16,203.0.113.7/32,fd00::/8" {
		t.Errorf("parsed %q", got)
	}
	for _, bad := range []string{"", "10.0.0.0/33", "example.com"} {
		if err := new(prefixesFlag).Set(bad); err == nil {
			t.Errorf("Set(%q) accepted", bad)
		}
	}
}
