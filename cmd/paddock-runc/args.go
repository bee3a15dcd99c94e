package main

import (
	"regexp"
	"strings"
)

// call is what the wrapper needs of one runc command line; everything
// else in it is passed to runc as it came.
type call struct {
	command string // "create", "run", "delete", ...; "" if none was found
	root    string // --root, "" for runc's default
	bundle  string // --bundle of create and run, "" for the working dir
	id      string // the container id, "" if none was found
}

// runc's global flags that take a value (urfave/cli: -flag or --flag,
// value separate or after "="); the others are booleans.
var globalValueFlags = map[string]bool{"root": true, "log": true, "log-format": true, "criu": true, "rootless": true}

// The value flags of the commands looked at. A flag this list does not
// know ends the parse: the line goes to runc untouched.
var commandValueFlags = map[string]map[string]bool{
	"create": {"bundle": true, "b": true, "console-socket": true, "pidfd-socket": true, "pid-file": true, "preserve-fds": true},
	"run":    {"bundle": true, "b": true, "console-socket": true, "pidfd-socket": true, "pid-file": true, "preserve-fds": true},
	"delete": {},
}

var commandBoolFlags = map[string]map[string]bool{
	"create": {"no-pivot": true, "no-new-keyring": true},
	"run":    {"no-pivot": true, "no-new-keyring": true, "detach": true, "d": true, "keep": true, "no-subreaper": true},
	"delete": {"force": true, "f": true},
}

// validID is runc's own rule for container ids; the id also names a
// directory of the wrapper's.
var validID = regexp.MustCompile(`^[\w+\-.]+$`)

// parseArgs reads runc's arguments (without argv[0]). ok is false when the
// line is not one the wrapper looks at (another command, or a flag it does
// not know): then it only passes it on.
func parseArgs(args []string) (c call, ok bool) {
	i := 0
	for ; i < len(args); i++ {
		name, value, hasValue, isFlag := splitFlag(args[i])
		if !isFlag {
			break
		}
		if globalValueFlags[name] && !hasValue {
			if i+1 >= len(args) {
				return c, false
			}
			i++
			value = args[i]
		}
		if name == "root" {
			c.root = value
		}
	}
	if i >= len(args) {
		return c, false
	}
	c.command = args[i]
	values, known := commandValueFlags[c.command]
	if !known {
		return c, false
	}
	bools := commandBoolFlags[c.command]
	for i++; i < len(args); i++ {
		if args[i] == "--" {
			i++
			break
		}
		name, value, hasValue, isFlag := splitFlag(args[i])
		if !isFlag {
			break
		}
		switch {
		case values[name]:
			if !hasValue {
				if i+1 >= len(args) {
					return c, false
				}
				i++
				value = args[i]
			}
			if name == "bundle" || name == "b" {
				c.bundle = value
			}
		case bools[name]:
		default:
			return c, false
		}
	}
	// One id and nothing after it, as runc wants.
	if i != len(args)-1 || !validID.MatchString(args[i]) || args[i] == "." || args[i] == ".." {
		return c, false
	}
	c.id = args[i]
	return c, true
}

// splitFlag splits "-name", "--name" and "--name=value".
func splitFlag(arg string) (name, value string, hasValue, isFlag bool) {
	if len(arg) < 2 || arg[0] != '-' || arg == "--" {
		return "", "", false, false
	}
	name = strings.TrimPrefix(strings.TrimPrefix(arg, "-"), "-")
	name, value, hasValue = strings.Cut(name, "=")
	return name, value, hasValue, true
}
