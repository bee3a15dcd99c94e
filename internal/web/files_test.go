package web

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/store"
	"github.com/paddock-dev/paddock/sdk"
)

// apiClient is an SDK client of the API behind the dashboard, with token.
func (e *env) apiClient(token string) *sdk.Client {
	return sdk.New("http://paddock.internal", token, sdk.WithHTTPClient(&http.Client{Transport: inProcess{e.api}}))
}

// metered adds a running sandbox of team-a that started minutes ago and
// books a metering sample for each of its minutes: minute i used i/2 CPU
// seconds, i KiB in and out, and peaked at i MiB.
func (e *env) metered(t *testing.T, id string, minutes int) {
	t.Helper()
	start := time.Now().UTC().Truncate(time.Minute).Add(-time.Duration(minutes) * time.Minute)
	e.sbs.Add(sandbox.Sandbox{ID: id, TeamID: "team-a", State: sandbox.Running, Image: "host",
		CreatedAt: start, StartedAt: start, ExpiresAt: time.Now().Add(time.Hour)})
	for i := range minutes {
		at := start.Add(time.Duration(i) * time.Minute)
		if err := e.store.AddUsage(context.Background(), store.Usage{ID: fmt.Sprintf("%s/%d", id, at.UnixMilli()), TeamID: "team-a",
			SandboxID: id, Start: at, End: at.Add(time.Minute), CPUSeconds: float64(i) / 2, MemoryMBHours: 1.0 / 60,
			NetRxBytes: uint64(i) << 10, NetTxBytes: uint64(i) << 10, MemoryPeakBytes: uint64(i) << 20}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestFilesPage reads the files page as a browser without scripts does:
// directories link to their listing, files to their download, and what
// the API refuses is said on the page.
func TestFilesPage(t *testing.T) {
	e := newEnv(t)
	c := e.client(t)
	e.signIn(t, c, tokenA)
	ctx := context.Background()
	if _, err := e.apiClient(tokenA).Sandbox(e.sbA).WriteFiles(ctx, "/home/user/docs", []sdk.File{{Path: "notes.txt", Content: []byte("hello notes")}}); err != nil {
		t.Fatal(err)
	}
	e.agent.PutSymlink("/home/user/docs/passwd", "/etc/passwd")
	e.agent.PutFile("/home/user/docs/<img src=x onerror=alert(1)>", []byte("x"), 0o644)
	page := "/ui/sandboxes/" + e.sbA + "/files?path="
	tests := []struct {
		name, path string
		status     int
		want       []string
		not        []string
	}{
		{"the root by default", "/ui/sandboxes/" + e.sbA + "/files", http.StatusOK,
			[]string{"<h1>Files</h1>", `href="/ui/sandboxes/` + e.sbA + `/files?path=%2fhome">home/</a>`, `<label for="upload-file">`}, nil},
		{"a directory", page + "/home/user/docs", http.StatusOK, []string{
			`href="/ui/sandboxes/` + e.sbA + `/download?path=%2fhome%2fuser%2fdocs%2fnotes.txt" download`,
			`passwd</a> → <code>/etc/passwd</code>`,
			`aria-label="Parent directory"`,
			`&lt;img src=x onerror=alert(1)&gt;`,
			`name="dir" value="/home/user/docs"`,
			`name="back" value="/ui/sandboxes/` + e.sbA + `/files?path=%2Fhome%2Fuser%2Fdocs"`,
		}, []string{"<img src=x"}},
		{"unclean path", page + "/home//user/./docs/", http.StatusOK, []string{"notes.txt", `value="/home/user/docs"`}, nil},
		{"a file", page + "/home/user/docs/notes.txt", http.StatusBadRequest,
			[]string{`id="files-error"`, `download?path=%2fhome%2fuser%2fdocs%2fnotes.txt" download`}, nil},
		{"missing", page + "/nowhere", http.StatusNotFound, []string{`id="files-error"`, "not found"}, nil},
		{"dot-dot", page + "/home/../etc", http.StatusBadRequest, []string{`id="files-error"`, "must not contain .."}, nil},
		{"relative", page + "etc", http.StatusBadRequest, []string{`id="files-error"`, "must be absolute"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := get(t, c, e.srv.URL+tc.path)
			if resp.StatusCode != tc.status {
				t.Fatalf("%d, want %d:\n%s", resp.StatusCode, tc.status, body)
			}
			for _, w := range tc.want {
				if !strings.Contains(body, w) {
					t.Errorf("missing %q in:\n%s", w, body)
				}
			}
			for _, w := range tc.not {
				if strings.Contains(body, w) {
					t.Errorf("%q in:\n%s", w, body)
				}
			}
		})
	}
	resp, body := get(t, c, e.srv.URL+page+"/")
	if resp.StatusCode != http.StatusOK || strings.Contains(body, "Parent directory") {
		t.Errorf("the root: %d, want no parent:\n%s", resp.StatusCode, body)
	}
}

func TestDownload(t *testing.T) {
	e := newEnv(t)
	c := e.client(t)
	e.signIn(t, c, tokenA)
	e.agent.PutFile("/home/user/notes.txt", []byte("hello notes"), 0o644)
	e.agent.PutFile("/home/user/in\"jected\r\nX-Evil: 1.txt", []byte("x"), 0o644)
	e.agent.PutFile("/home/user/naïve.txt", []byte("x"), 0o644)
	dl := func(sandboxID, p string) (*http.Response, string) {
		return get(t, c, e.srv.URL+"/ui/sandboxes/"+sandboxID+"/download?path="+url.QueryEscape(p))
	}
	resp, body := dl(e.sbA, "/home/user/notes.txt")
	if resp.StatusCode != http.StatusOK || body != "hello notes" || resp.Header.Get("Content-Disposition") != "attachment; filename=notes.txt" ||
		resp.Header.Get("Content-Length") != "11" || resp.Header.Get("Content-Type") != "application/octet-stream" {
		t.Fatalf("download: %d %v %q", resp.StatusCode, resp.Header, body)
	}
	for name, p := range map[string]string{"header injection": "/home/user/in\"jected\r\nX-Evil: 1.txt", "non-ASCII": "/home/user/naïve.txt"} {
		t.Run(name, func(t *testing.T) {
			resp, body := dl(e.sbA, p)
			cd := resp.Header.Get("Content-Disposition")
			if resp.StatusCode != http.StatusOK || body != "x" || resp.Header.Get("X-Evil") != "" || !strings.HasPrefix(cd, "attachment") || strings.ContainsAny(cd, "\r\n") {
				t.Fatalf("%d %q %v", resp.StatusCode, body, resp.Header)
			}
		})
	}
	for _, tc := range []struct {
		name, sandbox, path string
		status              int
	}{
		{"missing file", e.sbA, "/home/user/none", http.StatusNotFound},
		{"relative", e.sbA, "notes.txt", http.StatusBadRequest},
		{"dot-dot", e.sbA, "/home/../etc/passwd", http.StatusBadRequest},
		{"another team's sandbox", e.sbB, "/home/user/notes.txt", http.StatusNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := dl(tc.sandbox, tc.path)
			if resp.StatusCode != tc.status || !strings.Contains(body, `role="alert"`) || strings.Contains(body, "team-b") {
				t.Fatalf("%d, want %d with the error on a page:\n%s", resp.StatusCode, tc.status, body)
			}
		})
	}
}

func TestFilesOfAnotherTeamAreNotFound(t *testing.T) {
	e := newEnv(t)
	c := e.client(t)
	e.signIn(t, c, tokenA)
	resp, body := get(t, c, e.srv.URL+"/ui/sandboxes/"+e.sbB+"/files?path=/")
	if resp.StatusCode != http.StatusNotFound || strings.Contains(body, "team-b") || strings.Contains(body, `id="files"`) {
		t.Fatalf("%d, want a bare 404:\n%s", resp.StatusCode, body)
	}
	if reads := e.agent.Reads(); len(reads) != 0 {
		t.Fatalf("the agent was asked %q", reads)
	}
}

// TestUploadFromFilesPage uploads into the listed directory, comes back
// to it, and the file reads back through the API; a form past the bound
// is refused as too large, not as a forged one.
func TestUploadFromFilesPage(t *testing.T) {
	e := newEnv(t)
	c := e.client(t)
	e.signIn(t, c, tokenA)
	_, page := get(t, c, e.srv.URL+"/ui/sandboxes/"+e.sbA+"/files?path=/home/user")
	token := csrfOf(t, page)
	back := "/ui/sandboxes/" + e.sbA + "/files?path=%2Fhome%2Fuser"
	upload := func(content string) *http.Response {
		t.Helper()
		var body bytes.Buffer
		mw := multipart.NewWriter(&body)
		mw.WriteField("csrf", token)
		mw.WriteField("dir", "/home/user")
		mw.WriteField("back", back)
		fw, _ := mw.CreateFormFile("file", "report.csv")
		fw.Write([]byte(content))
		mw.Close()
		resp, err := c.Post(e.srv.URL+"/ui/sandboxes/"+e.sbA+"/upload", mw.FormDataContentType(), &body)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		io.Copy(io.Discard, resp.Body)
		return resp
	}
	if resp := upload("a,b\n1,2\n"); resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != back {
		t.Fatalf("upload: %d %q, want 303 back to the listing", resp.StatusCode, resp.Header.Get("Location"))
	}
	f, err := e.apiClient(tokenA).Sandbox(e.sbA).ReadFile(context.Background(), "/home/user/report.csv")
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(f)
	f.Close()
	if string(data) != "a,b\n1,2\n" {
		t.Fatalf("read back %q", data)
	}
	if _, body := get(t, c, e.srv.URL+back); !strings.Contains(body, "report.csv") {
		t.Fatalf("the listing does not show the upload:\n%s", body)
	}

	old := maxFormBytes
	maxFormBytes = 1 << 10
	t.Cleanup(func() { maxFormBytes = old })
	resp := upload(strings.Repeat("x", 4<<10))
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("oversized upload: %d, want 413", resp.StatusCode)
	}
	if n := len(e.agent.Writes()); n != 1 {
		t.Fatalf("%d writes reached the agent, want only the first upload", n)
	}
}

func TestSandboxUsageOverTime(t *testing.T) {
	e := newEnv(t)
	c := e.client(t)
	e.signIn(t, c, tokenA)
	e.metered(t, "sb-metered", 30)
	tests := []struct {
		name, id string
		want     []string
	}{
		{"sampled", "sb-metered", []string{"Usage over time", `id="chart-cpu"`, `id="chart-memory"`, `id="chart-network"`,
			"A bar a minute: 217.5 CPU seconds", `<svg class="chart"`, "in 29.0 KiB, out 29.0 KiB", "29.0 MiB", "0.24 cores"}},
		{"nothing booked yet", e.sbA, []string{"Usage over time", "No usage recorded yet"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := get(t, c, e.srv.URL+"/ui/sandboxes/"+tc.id)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("%d:\n%s", resp.StatusCode, body)
			}
			for _, w := range tc.want {
				if !strings.Contains(body, w) {
					t.Errorf("missing %q in:\n%s", w, body)
				}
			}
		})
	}
	_, body := get(t, c, e.srv.URL+"/ui/sandboxes/sb-metered")
	cpu := body[strings.Index(body, `id="chart-cpu"`):]
	cpu = cpu[:strings.Index(cpu, "</figure>")]
	if n := strings.Count(cpu, "<rect"); n < 30 || n > 32 {
		t.Errorf("%d CPU bars, want one a minute of the sandbox's 30", n)
	}
}
