// Package e2e holds paddock's end-to-end tests: the whole stack (HTTP API,
// node manager, runc driver, in-sandbox agent) with real sandboxes, driven
// through the Go SDK and the CLI, with a leak check after every test. They
// need root and a Linux host that `paddock doctor` approves; elsewhere they
// skip with the doctor's reason.
package e2e
