package web

import (
	"errors"
	"fmt"
	"html/template"
	"io"
	"mime"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/sdk"
)

// The sandbox's files (a page of its own, linked from the sandbox page)
// and its usage over time (a section of the sandbox page).

// maxShownEntries bounds the rows of one directory page; the API answers
// up to 50,000 entries, more than a page can usefully show.
const maxShownEntries = 2000

// filesView is the files page: where it is, what is there, and what went
// wrong reading it.
type filesView struct {
	Dir     string
	Parent  string // "" at the root
	Crumbs  []crumb
	Entries []api.FileEntry
	Hidden  int    // entries past maxShownEntries
	Error   string // the API's refusal, shown in place of the listing
	// NotDir: Dir is not a directory (a file, or a symlink to one), so the
	// page offers its download instead.
	NotDir     bool
	UploadMax  string
	BackToHere string // this page, for the upload form to return to
}

// crumb is one step of the path above the listing.
type crumb struct{ Name, Path string }

func crumbsOf(dir string) []crumb {
	out := []crumb{{Name: "/", Path: "/"}}
	p := ""
	for part := range strings.SplitSeq(strings.Trim(dir, "/"), "/") {
		if part == "" {
			continue
		}
		p += "/" + part
		out = append(out, crumb{Name: part, Path: p})
	}
	return out
}

// filesPage lists a directory of the sandbox (?path=, the user's home by
// default): directories link to their own listing, files to their
// download. It works without scripts.
func (h *Handler) filesPage(rq *request) error {
	sb := rq.api.Sandbox(rq.r.PathValue("id"))
	if err := sb.Refresh(rq.ctx); err != nil {
		return err
	}
	dir := rq.r.URL.Query().Get("path")
	if dir == "" {
		dir = "/"
		if sb.User != nil && sb.User.Home != "" {
			dir = sb.User.Home
		}
	}
	v := &filesView{UploadMax: humanBytes(uint64(maxFormBytes))}
	// where sets the page's place: the API's clean path once it answered,
	// else what was asked for (the API says what is wrong with it).
	where := func(dir string) {
		v.Dir, v.Crumbs = dir, crumbsOf(dir)
		v.BackToHere = Prefix + "/sandboxes/" + url.PathEscape(sb.ID) + "/files?path=" + url.QueryEscape(dir)
		if dir != "/" && path.IsAbs(dir) && sandbox.ValidatePath(dir) == nil {
			v.Parent = path.Dir(path.Clean(dir))
		}
	}
	where(dir)
	d := pageData{Title: "Files of " + sb.ID, Nav: "sandboxes", Sandbox: &sb.Sandbox, Files: v}
	status := http.StatusOK
	if sb.Status != api.StatusRunning {
		v.Error = "The sandbox is " + sb.Status + ": its files can be read only while it runs."
		h.render(rq.w, rq, status, "files", d)
		return nil
	}
	l, err := sb.ListDir(rq.ctx, dir, 1)
	var ae *sdk.APIError
	switch {
	case err == nil:
		where(l.Path)
		v.Entries = sortEntries(l.Entries)
		if len(v.Entries) > maxShownEntries {
			v.Hidden = len(v.Entries) - maxShownEntries
			v.Entries = v.Entries[:maxShownEntries]
		}
	case errors.As(err, &ae) && ae.Status != http.StatusUnauthorized && ae.Code != "sandbox_not_found":
		// The directory's trouble, not the page's: say so where it is.
		status, v.Error, v.NotDir = ae.Status, ae.Message, ae.Status == http.StatusBadRequest && ae.Code == "not_a_directory"
	default:
		return err
	}
	h.render(rq.w, rq, status, "files", d)
	return nil
}

// sortEntries puts directories (and symlinks, which may be ones) first,
// then files, each by name.
func sortEntries(es []api.FileEntry) []api.FileEntry {
	rank := func(e api.FileEntry) int {
		switch e.Type {
		case api.FileTypeDir:
			return 0
		case api.FileTypeSymlink:
			return 1
		}
		return 2
	}
	slices.SortStableFunc(es, func(a, b api.FileEntry) int {
		if r := rank(a) - rank(b); r != 0 {
			return r
		}
		return strings.Compare(a.Name, b.Name)
	})
	return es
}

// download streams a file of the sandbox as an attachment named after it.
func (h *Handler) download(rq *request) error {
	p := rq.r.URL.Query().Get("path")
	f, err := rq.api.Sandbox(rq.r.PathValue("id")).ReadFile(rq.ctx, p)
	if err != nil {
		return err
	}
	defer f.Close()
	hd := rq.w.Header()
	hd.Set("Content-Type", "application/octet-stream")
	// The name is the sandbox's: FormatMediaType quotes or encodes it
	// (RFC 2231), and refuses what it cannot carry.
	disp := mime.FormatMediaType("attachment", map[string]string{"filename": path.Base(p)})
	if disp == "" {
		disp = "attachment"
	}
	hd.Set("Content-Disposition", disp)
	hd.Set("Cache-Control", "no-store")
	if f.Info.Size >= 0 {
		hd.Set("Content-Length", strconv.FormatInt(f.Info.Size, 10))
	}
	if _, err := io.Copy(rq.w, f); err != nil && rq.ctx.Err() == nil {
		// Too late for an error page: cut the answer so the browser sees
		// a failed download rather than a short file.
		h.log.Warn("dashboard: download cut short", "sandbox", rq.r.PathValue("id"), "err", err)
		panic(http.ErrAbortHandler)
	}
	return nil
}

// usageView is a sandbox's usage over its life, from its metering samples
// (GET /usage?sandboxId=): a bar per minute for a sandbox of up to three
// hours, else per hour over its last 48 (the samples' retention).
type usageView struct {
	Per                  string // "a minute" or "an hour"
	CPU, Memory, Network template.HTML
	CPUSeconds           float64
	RxBytes, TxBytes     uint64
	Empty                bool
}

func (h *Handler) sandboxUsage(rq *request, sb *api.Sandbox) (*usageView, error) {
	start, end := sb.StartedAt, sb.StoppedAt
	if start.IsZero() {
		start = sb.CreatedAt
	}
	if end.IsZero() || sb.Status == api.StatusRunning {
		end = h.cfg.Now()
	}
	if start.IsZero() || !end.After(start) {
		return &usageView{Per: "a minute", Empty: true}, nil
	}
	g, step := "minute", time.Minute
	if end.Sub(start) > 3*time.Hour {
		g, step = "hour", time.Hour
		if from := end.Add(-48 * time.Hour); start.Before(from) {
			start = from
		}
	}
	start = start.UTC().Truncate(step)
	n := int(end.Sub(start)/step) + 1
	u, err := rq.api.AllUsage(rq.ctx, sdk.UsageQuery{SandboxID: sb.ID, Since: start, Until: end, Granularity: g, Limit: 1000})
	if err != nil {
		return nil, err
	}
	v := &usageView{Per: "a minute", Empty: len(u.Usage) == 0}
	if g == "hour" {
		v.Per = "an hour"
	}
	starts := make([]time.Time, n)
	for i := range starts {
		starts[i] = start.Add(time.Duration(i) * step)
	}
	cpu, mem, rx, tx := make([]float64, n), make([]float64, n), make([]uint64, n), make([]uint64, n)
	for _, r := range u.Usage {
		i := int(r.Start.Sub(start) / step)
		if i < 0 || i >= n {
			continue
		}
		cpu[i] += r.CPUSeconds / step.Seconds()
		mem[i] = max(mem[i], float64(r.MemoryPeakBytes))
		rx[i] += r.NetRxBytes
		tx[i] += r.NetTxBytes
		v.CPUSeconds += r.CPUSeconds
		v.RxBytes += r.NetRxBytes
		v.TxBytes += r.NetTxBytes
	}
	net := make([]float64, n)
	for i := range net {
		net[i] = float64(rx[i] + tx[i])
	}
	tick, at := "15:04", "2006-01-02 15:04"
	if g == "hour" {
		tick = "01-02 15h"
	}
	cores := func(v float64) string { return fmt.Sprintf("%.2f cores", v) }
	size := func(v float64) string { return humanBytes(uint64(v)) }
	v.CPU = bars{Label: "CPU, average cores " + v.Per, Starts: starts, Values: cpu, Tick: tick, At: at, Height: 100, Peak: cores,
		Tip: func(i int) string { return cores(cpu[i]) }}.svg()
	v.Memory = bars{Label: "Peak memory " + v.Per, Starts: starts, Values: mem, Tick: tick, At: at, Height: 100, Peak: size,
		Tip: func(i int) string { return size(mem[i]) }}.svg()
	v.Network = bars{Label: "Network bytes in and out " + v.Per, Starts: starts, Values: net, Tick: tick, At: at, Height: 100, Peak: size,
		Tip: func(i int) string { return "in " + humanBytes(rx[i]) + ", out " + humanBytes(tx[i]) }}.svg()
	return v, nil
}
