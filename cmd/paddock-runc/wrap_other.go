//go:build !linux

package main

import "errors"

func run([]string) error { return errors.New("runc and user namespaces need Linux") }
