package main

import (
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/paddock-dev/paddock/sdk"
)

// subcommand is the frame of `paddock <noun> <verb> ...`: the verb's flag
// set, which carries the connection flags, and one way to parse it, so
// that every noun words its usage errors alike.
type subcommand struct {
	verb string
	args []string
	fs   *flag.FlagSet
	cf   clientFlags
}

// newSubcommand takes the verb off args; verbs lists the noun's verbs for
// the error when none is given. The caller registers the verb's own flags
// on fs before it parses.
func newSubcommand(noun, verbs string, args []string, stderr io.Writer) (*subcommand, error) {
	if len(args) == 0 {
		return nil, usagef("%s: missing subcommand (%s)", noun, verbs)
	}
	sc := &subcommand{verb: args[0], args: args[1:]}
	sc.fs = flag.NewFlagSet(noun+" "+sc.verb, flag.ContinueOnError)
	sc.fs.SetOutput(stderr)
	sc.cf.register(sc.fs)
	return sc, nil
}

// parse parses the flags and wants exactly nargs arguments, which what
// describes in the usage error.
func (sc *subcommand) parse(nargs int, what string) error {
	if err := sc.fs.Parse(sc.args); err != nil {
		return usagef("%s: %v", sc.fs.Name(), err)
	}
	if sc.fs.NArg() != nargs {
		return usagef("%s: want %s", sc.fs.Name(), what)
	}
	return nil
}

// connect parses as parse does, then makes the client: the prologue of
// every verb that only talks to the server.
func (sc *subcommand) connect(nargs int, what string) (*sdk.Client, error) {
	if err := sc.parse(nargs, what); err != nil {
		return nil, err
	}
	return sc.cf.client()
}

// table is a listing with aligned columns, as every `ls` prints.
type table struct{ tw *tabwriter.Writer }

func newTable(w io.Writer, columns ...string) table {
	t := table{tw: tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)}
	fmt.Fprintln(t.tw, strings.Join(columns, "\t"))
	return t
}

// row prints one line; fields are formatted with %v.
func (t table) row(fields ...any) {
	for i, f := range fields {
		if i > 0 {
			fmt.Fprint(t.tw, "\t")
		}
		fmt.Fprint(t.tw, f)
	}
	fmt.Fprintln(t.tw)
}

// flush writes the table out; nothing is printed before it.
func (t table) flush() error { return t.tw.Flush() }
