//go:build linux

package agent

import (
	"bytes"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestOutputWriter: the agent's log writer never blocks on a full pipe,
// never dies on one nobody reads, and writes each line whole or not at all.
func TestOutputWriter(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	out, err := OutputWriter(w)
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("x", 3*maxLogLine) + "\n"
	if n, err := out.Write([]byte(long)); n != len(long) || err != nil {
		t.Fatalf("write: %d %v", n, err)
	}
	buf := make([]byte, 4*maxLogLine)
	n, _ := r.Read(buf)
	if n != maxLogLine || buf[n-1] != '\n' {
		t.Errorf("a long line came out as %d bytes ending in %q, want cut to %d", n, buf[n-1], maxLogLine)
	}

	// Nobody reads: fill the pipe, then a line is dropped, not waited on.
	line := []byte(strings.Repeat("y", 99) + "\n")
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 10_000 { // 1 MB, past any pipe's buffer
			out.Write(line)
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the writer blocked on a full pipe")
	}
	// What is in the pipe is whole lines.
	rfd := int(r.Fd())
	unix.SetNonblock(rfd, true)
	var got bytes.Buffer
	for {
		n, err := unix.Read(rfd, buf)
		if n <= 0 || err != nil {
			break
		}
		got.Write(buf[:n])
	}
	if got.Len() == 0 || got.Len()%len(line) != 0 || bytes.Count(got.Bytes(), []byte("\n")) != got.Len()/len(line) {
		t.Errorf("%d bytes in the pipe: not whole lines", got.Len())
	}

	// The reader is gone (paddock restarting): EPIPE, no SIGPIPE death.
	r.Close()
	if n, err := out.Write(line); n != len(line) || err != nil {
		t.Errorf("write to a pipe nobody reads: %d %v", n, err)
	}
}
