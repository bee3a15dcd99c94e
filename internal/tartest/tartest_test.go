package tartest

import (
	"archive/tar"
	"bytes"
	"io"
	"testing"
)

func TestPAXSparse(t *testing.T) {
	tr := tar.NewReader(bytes.NewReader(PAXSparse(t, "s", 1<<20)))
	hdr, err := tr.Next()
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, tr)
	if err != nil || hdr.Name != "s" || hdr.Typeflag != tar.TypeReg || hdr.Size != 1<<20 || n != 1<<20 {
		t.Fatalf("read %+v, %d bytes, %v", hdr, n, err)
	}
	if _, err := tr.Next(); err != io.EOF {
		t.Fatalf("after the file: %v", err)
	}
}
