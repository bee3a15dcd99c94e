package agent

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
)

// maxTokenFile caps what TakeToken reads: a credential is a few dozen bytes.
const maxTokenFile = 4096

// Install is `paddock-agent install`, the init container of a Kubernetes
// sandbox: it copies the running agent binary to --agent (the Pod's shared
// volume that the sandbox mounts read-only at BinaryPath's directory), and
// the credential from --token-from (the Secret, mounted into the init
// container alone) to --token-to (a memory volume of the sandbox's, where
// the agent takes it at start: TakeToken).
func Install(args []string) error {
	fs := flag.NewFlagSet("install", flag.ContinueOnError)
	dst := fs.String("agent", "", "copy this binary here")
	tokenFrom := fs.String("token-from", "", "the credential's file")
	tokenTo := fs.String("token-to", "", "copy the credential here, mode 0400")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dst == "" || (*tokenFrom == "") != (*tokenTo == "") {
		return errors.New("usage: install --agent DEST [--token-from SRC --token-to DEST]")
	}
	if err := copyFile("/proc/self/exe", *dst, 0o555, 0); err != nil {
		return err
	}
	if *tokenFrom != "" {
		return copyFile(*tokenFrom, *tokenTo, 0o400, maxTokenFile)
	}
	return nil
}

// copyFile copies src to a new file dst (refusing one that exists), at
// most limit bytes when limit > 0.
func copyFile(src, dst string, mode os.FileMode, limit int64) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	var r io.Reader = in
	if limit > 0 {
		r = io.LimitReader(in, limit)
	}
	if _, err := io.Copy(out, r); err != nil {
		out.Close()
		return fmt.Errorf("copy %s: %w", src, err)
	}
	return out.Close()
}

// TakeToken reads the agent's credential from path and removes the file,
// before any command runs: from then on the credential exists only in the
// agent's memory, which Protect keeps from every command (sudo included).
// It fails if the file cannot be removed, rather than leave it readable.
func TakeToken(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("agent token: %w", err)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxTokenFile+1))
	f.Close()
	if err != nil {
		return "", fmt.Errorf("agent token: %w", err)
	}
	if err := os.Remove(path); err != nil {
		return "", fmt.Errorf("agent token: remove %s: %w", path, err)
	}
	token := string(bytes.TrimSpace(data))
	if len(data) > maxTokenFile || len(token) < minTokenLen {
		return "", fmt.Errorf("agent token: want %d to %d characters", minTokenLen, maxTokenFile)
	}
	return token, nil
}
