package gvisor

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// EnvRunsc names the environment variable that points at a runsc binary.
const EnvRunsc = "PADDOCK_RUNSC"

// CacheDir is where hack/gvisor/build-runsc.sh keeps the runsc it builds,
// as CacheDir/<version>-<go version>-<script hash>/runsc beside a stamp
// file written last.
const CacheDir = "/var/cache/paddock/runsc"

// HowToGet says how to get runsc, for doctor's and tests' messages.
const HowToGet = "build it with hack/gvisor/build-runsc.sh (about 5 min; needs Go and the module proxy) or set " + EnvRunsc + " to a runsc binary"

// ErrNoRunsc is returned by Find when no runsc is found.
var ErrNoRunsc = errors.New("runsc not found: " + HowToGet)

// Find returns the runsc to use: $PADDOCK_RUNSC when set (an error if it
// is not an executable file), else the newest complete build in CacheDir,
// else runsc on PATH.
func Find() (string, error) {
	if p := os.Getenv(EnvRunsc); p != "" {
		if err := executable(p); err != nil {
			return "", err
		}
		return p, nil
	}
	if p := newestCached(CacheDir); p != "" {
		return p, nil
	}
	if p, err := exec.LookPath("runsc"); err == nil {
		return p, nil
	}
	return "", ErrNoRunsc
}

// newestCached returns the runsc of the most recently stamped entry under
// dir, or "". An entry without its stamp is half-built and ignored.
func newestCached(dir string) string {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return ""
	}
	var best string
	var bestTime time.Time
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		st, err := os.Stat(filepath.Join(dir, e.Name(), "stamp"))
		if err != nil {
			continue
		}
		p := filepath.Join(dir, e.Name(), "runsc")
		if executable(p) != nil {
			continue
		}
		if best == "" || st.ModTime().After(bestTime) {
			best, bestTime = p, st.ModTime()
		}
	}
	return best
}

func executable(p string) error {
	st, err := os.Stat(p)
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() || st.Mode().Perm()&0o111 == 0 {
		return errors.New(p + " is not an executable file")
	}
	return nil
}
