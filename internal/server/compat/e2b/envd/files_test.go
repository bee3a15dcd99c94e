package envd

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/json"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// multipartBody builds an upload as the SDKs send it: one "file" part per
// file, its sandbox path as the file name.
func multipartBody(t *testing.T, files [][2]string) (string, string) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for _, f := range files {
		h := textproto.MIMEHeader{}
		h.Set("Content-Disposition", `form-data; name="file"; filename="`+f[0]+`"`)
		h.Set("Content-Type", "application/octet-stream")
		w, err := mw.CreatePart(h)
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte(f[1]))
	}
	mw.Close()
	return buf.String(), mw.FormDataContentType()
}

func TestFilesUploadDownload(t *testing.T) {
	e, root := newFSEnv(t)
	tok := e.tokens.Access(sbA)
	post := func(query, ctype, body string, hdr http.Header) (int, string) {
		t.Helper()
		if hdr == nil {
			hdr = http.Header{}
		}
		hdr.Set("Content-Type", ctype)
		resp, out := e.do(t, request{method: "POST", path: "/files?" + query, sandbox: sbA, port: "49983", token: tok, header: hdr, body: body})
		return resp.StatusCode, out
	}
	get := func(query string) (int, string, http.Header) {
		t.Helper()
		resp, out := e.do(t, request{path: "/files?" + query, sandbox: sbA, port: "49983", token: tok})
		return resp.StatusCode, out, resp.Header
	}

	// Multipart, several files, paths in the file names (one relative).
	body, ct := multipartBody(t, [][2]string{{"/home/user/m/one.txt", "one"}, {"m/two.txt", "two"}, {"/tmp/x/y/three", "3"}})
	status, out := post("", ct, body, nil)
	if status != http.StatusOK {
		t.Fatalf("multipart: %d %s", status, out)
	}
	var written []writtenFile
	if err := json.Unmarshal([]byte(out), &written); err != nil {
		t.Fatal(err)
	}
	if len(written) != 3 || written[0] != (writtenFile{Name: "one.txt", Type: "file", Path: "/home/user/m/one.txt"}) ||
		written[1].Path != "/home/user/m/two.txt" || written[2].Path != "/tmp/x/y/three" {
		t.Errorf("written %+v", written)
	}
	// Multipart with the path in the query, as write(path, data) sends it.
	body, ct = multipartBody(t, [][2]string{{"ignored-name", "by query"}})
	if status, out := post("path=q.txt", ct, body, nil); status != http.StatusOK || !strings.Contains(out, `"path":"/home/user/q.txt"`) {
		t.Errorf("multipart with path: %d %s", status, out)
	}
	// Octet-stream, gzip.
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte("zipped"))
	zw.Close()
	if status, out := post("path=z.txt", "application/octet-stream", gz.String(), http.Header{"Content-Encoding": {"gzip"}}); status != http.StatusOK {
		t.Errorf("gzip upload: %d %s", status, out)
	}
	for name, want := range map[string]string{"home/user/m/one.txt": "one", "home/user/m/two.txt": "two", "tmp/x/y/three": "3",
		"home/user/q.txt": "by query", "home/user/z.txt": "zipped"} {
		data, err := os.ReadFile(filepath.Join(root, name))
		if err != nil || string(data) != want {
			t.Errorf("%s holds %q (%v), want %q", name, data, err, want)
		}
		if fi, err := os.Stat(filepath.Join(root, name)); err == nil && fi.Sys().(*syscall.Stat_t).Uid != sandbox.DefaultUID {
			t.Errorf("%s owned by %d", name, fi.Sys().(*syscall.Stat_t).Uid)
		}
	}

	status, out, hdr := get("path=m/one.txt")
	if status != http.StatusOK || out != "one" || hdr.Get("Content-Length") != "3" || hdr.Get("Content-Type") != "application/octet-stream" {
		t.Errorf("download: %d %q %v", status, out, hdr)
	}
	for _, tc := range []struct {
		name, query string
		status      int
	}{
		{"missing", "path=nope", http.StatusNotFound},
		{"a directory", "path=/home/user/m", http.StatusBadRequest},
		{"no path", "", http.StatusBadRequest},
		{"unknown user", "path=m/one.txt&username=bob", http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, out, _ := get(tc.query)
			var eb errorBody
			if status != tc.status || json.Unmarshal([]byte(out), &eb) != nil || eb.Code != tc.status || eb.Message == "" {
				t.Errorf("got %d %s, want %d in envd's error shape", status, out, tc.status)
			}
		})
	}
	// Octet-stream needs a path; a foreign media type is refused.
	if status, _ := post("", "application/octet-stream", "x", nil); status != http.StatusBadRequest {
		t.Errorf("octet-stream without path: %d", status)
	}
	if status, _ := post("path=a", "text/plain", "x", nil); status < 400 {
		t.Errorf("text/plain upload: %d", status)
	}
	// Root's home, as root; the user may not read it.
	if status, out := post("path=secret&username=root", "application/octet-stream", "s", nil); status != http.StatusOK || !strings.Contains(out, `"/root/secret"`) {
		t.Fatalf("root upload: %d %s", status, out)
	}
	if status, _, _ := get("path=/root/secret"); status != http.StatusForbidden {
		t.Errorf("user reads root's file: %d", status)
	}
}

// TestFilesSignedURL reads and writes through URLs signed as the SDK's
// downloadUrl and uploadUrl sign them, with no token header.
func TestFilesSignedURL(t *testing.T) {
	e, root := newFSEnv(t)
	os.WriteFile(filepath.Join(root, "home/user/doc.txt"), []byte("signed"), 0o644)
	tok := e.tokens.Access(sbA)
	sign := func(path, op, user string) string {
		sum := sha256Sum(path + ":" + op + ":" + user + ":" + tok)
		return "v1_" + strings.TrimRight(base64.StdEncoding.EncodeToString(sum), "=")
	}
	q := url.Values{"path": {"/home/user/doc.txt"}, "username": {"user"}, "signature": {sign("/home/user/doc.txt", "read", "user")}}
	resp, out := e.do(t, request{path: "/files?" + q.Encode(), sandbox: sbA, port: "49983"})
	if resp.StatusCode != http.StatusOK || out != "signed" {
		t.Errorf("signed read: %d %q", resp.StatusCode, out)
	}
	q.Set("signature", sign("/home/user/doc.txt", "read", "root"))
	if resp, _ := e.do(t, request{path: "/files?" + q.Encode(), sandbox: sbA, port: "49983"}); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("read signed for another user: %d", resp.StatusCode)
	}
	body, ct := multipartBody(t, [][2]string{{"up.txt", "uploaded"}})
	q = url.Values{"path": {"up.txt"}, "username": {"user"}, "signature": {sign("up.txt", "write", "user")}}
	resp, out = e.do(t, request{method: "POST", path: "/files?" + q.Encode(), sandbox: sbA, port: "49983", header: http.Header{"Content-Type": {ct}}, body: body})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("signed write: %d %s", resp.StatusCode, out)
	}
	if data, _ := os.ReadFile(filepath.Join(root, "home/user/up.txt")); string(data) != "uploaded" {
		t.Errorf("signed write left %q", data)
	}
	// Another sandbox's signature, and another sandbox's token, open nothing.
	other := e.tokens.Access(sbB)
	sum := sha256Sum("/home/user/doc.txt:read:user:" + other)
	q = url.Values{"path": {"/home/user/doc.txt"}, "username": {"user"}, "signature": {"v1_" + strings.TrimRight(base64.StdEncoding.EncodeToString(sum), "=")}}
	if resp, _ := e.do(t, request{path: "/files?" + q.Encode(), sandbox: sbA, port: "49983"}); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("another sandbox's signature: %d", resp.StatusCode)
	}
	if resp, _ := e.do(t, request{path: "/files?path=/home/user/doc.txt", sandbox: sbA, port: "49983", token: other}); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("another sandbox's token: %d", resp.StatusCode)
	}
}
