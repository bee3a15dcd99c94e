package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/examples/goose-standin/standinimage"
	"github.com/paddock-dev/paddock/sdk"
)

// demoPathRoot is the stand-in's GOOSE_PATH_ROOT in the demo project, and
// its persistent path: its sessions live there.
const demoPathRoot = "/home/user/goose"

// demoCmd shows the whole project flow with one command: it builds the
// goose stand-in into an image, imports it, creates (or updates) a project
// that runs it with its sessions kept across activations, activates it,
// and talks to it through the app proxy as a web app would.
func demoCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cf clientFlags
	cf.register(fs)
	name := fs.String("name", "demo", "name of the project to create or update")
	message := fs.String("message", "hello", "what to say to the agent")
	if err := fs.Parse(args); err != nil {
		return usagef("demo: %v", err)
	}
	if fs.NArg() > 0 {
		return usagef("demo: unexpected arguments %q", fs.Args())
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		return errors.New("demo: building the goose stand-in needs the Go toolchain on PATH (https://go.dev/dl), and paddock's source tree as the working directory")
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "paddock demo: the goose stand-in as project %q\n\n", *name)

	start := time.Now()
	fmt.Fprint(stdout, "building the goose stand-in ... ")
	tmp, err := os.MkdirTemp("", "paddock-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	bin, err := standinimage.Build(ctx, goBin, tmp)
	if err != nil {
		fmt.Fprintln(stdout, "failed")
		return fmt.Errorf("demo: %w", err)
	}
	archive := filepath.Join(tmp, "goose-standin.tar")
	if err := standinimage.WriteImage(bin, archive, ""); err != nil {
		fmt.Fprintln(stdout, "failed")
		return fmt.Errorf("demo: %w", err)
	}
	fmt.Fprintf(stdout, "done (%.1fs)\n", time.Since(start).Seconds())

	img, err := importArchive(ctx, c, archive)
	if err != nil {
		return fmt.Errorf("demo: import the stand-in's image: %w", err)
	}
	fmt.Fprintf(stdout, "imported image %s\n", img.Ref)

	req := api.ProjectRequest{
		Name:       *name,
		Source:     api.ProjectSource{Image: img.Ref},
		AppPort:    standinimage.Port,
		HealthPath: standinimage.HealthPath,
		// The app runs as the sandbox's user (uid 1000): its data goes in
		// that user's home, which is also what is saved and restored.
		Env:             map[string]string{"GOOSE_PATH_ROOT": demoPathRoot},
		PersistentPaths: []string{demoPathRoot},
		AppSecretHeader: "X-Secret-Key",
		AppSecretEnv:    "GOOSE_SERVER__SECRET_KEY",
	}
	p, verb, err := upsertProject(ctx, c, req)
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	fmt.Fprintf(stdout, "project %s: %s (%s)\n\nactivating:\n", p.Name, p.ID, verb)
	a, err := activateWithProgress(ctx, c, p.ID, stdout)
	if err != nil {
		return err
	}

	sessionID, err := startSession(ctx, c, p.ID)
	if err != nil {
		return fmt.Errorf("demo: start a session through the app proxy: %w", err)
	}
	fmt.Fprintf(stdout, "\nsession %s, through the app proxy:\n  you:   %s\n  goose: ", sessionID, *message)
	if err := reply(ctx, c, p.ID, sessionID, *message, stdout); err != nil {
		fmt.Fprintln(stdout)
		return fmt.Errorf("demo: send a message through the app proxy: %w", err)
	}
	fmt.Fprintln(stdout)

	fmt.Fprintf(stdout, `
Try next:
  the app's sessions:  curl -H "Authorization: Bearer $PADDOCK_TOKEN" %[1]ssessions
  progress of a run:   paddock project activate %[2]s
  stop it:             paddock project deactivate %[2]s   (its sessions are saved)
  start it again:      paddock project activate %[2]s     (and they are back)
`, a.AppURL, p.Name)
	if u, err := c.AppURL(ctx, p.ID, time.Hour); err == nil {
		fmt.Fprintf(stdout, "  in a browser (1h):   %s\n", u.URL)
	}
	return nil
}

func importArchive(ctx context.Context, c *sdk.Client, path string, opts ...sdk.ImageOption) (api.Image, error) {
	f, err := os.Open(path)
	if err != nil {
		return api.Image{}, err
	}
	defer f.Close()
	return c.ImportImage(ctx, f, opts...)
}

// upsertProject creates the project, or updates the caller's project of
// that name so the demo can run again (and find its saved sessions).
func upsertProject(ctx context.Context, c *sdk.Client, req api.ProjectRequest) (api.Project, string, error) {
	for p, err := range c.ListProjects(ctx) {
		if err != nil {
			return api.Project{}, "", err
		}
		if p.Name == req.Name {
			up, err := c.UpdateProject(ctx, p.ID, req)
			return up, "updated", err
		}
	}
	p, err := c.CreateProject(ctx, req)
	return p, "created", err
}

// postApp posts in as JSON to the project's app through the app proxy and
// returns the answer if it is 200 (accept, if set, asks for its type); the
// caller closes its body. Another status is an error quoting the start of
// the app's answer, since that is what says why the app refused.
func postApp(ctx context.Context, c *sdk.Client, projectID, path string, in any, accept string) (*http.Response, error) {
	body, err := json.Marshal(in)
	if err != nil {
		return nil, err
	}
	req, err := c.AppRequest(ctx, projectID, http.MethodPost, path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", api.ContentTypeJSON)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := c.DoApp(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		return nil, fmt.Errorf("the app answered %s %s: %s %s", http.MethodPost, path, resp.Status, bytes.TrimSpace(data))
	}
	return resp, nil
}

// appJSON sends a JSON request to the project's app and decodes its answer.
func appJSON(ctx context.Context, c *sdk.Client, projectID, path string, in, out any) error {
	resp, err := postApp(ctx, c, projectID, path, in, "")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(out)
}

// startSession starts a goose session and loads its provider, as goose's
// desktop does (POST /agent/start, then /agent/resume).
func startSession(ctx context.Context, c *sdk.Client, projectID string) (string, error) {
	var sess struct {
		ID string `json:"id"`
	}
	if err := appJSON(ctx, c, projectID, "/agent/start", map[string]any{"working_dir": demoPathRoot}, &sess); err != nil {
		return "", err
	}
	if sess.ID == "" {
		return "", errors.New("the app started a session without an id")
	}
	var resumed json.RawMessage
	if err := appJSON(ctx, c, projectID, "/agent/resume", map[string]any{"session_id": sess.ID, "load_model_and_extensions": true}, &resumed); err != nil {
		return "", err
	}
	return sess.ID, nil
}

// reply sends text on goose's streaming /reply and prints the assistant's
// text as its chunks arrive, until Finish.
func reply(ctx context.Context, c *sdk.Client, projectID, sessionID, text string, out io.Writer) error {
	msg := map[string]any{
		"session_id": sessionID,
		"user_message": map[string]any{
			"role": "user", "created": time.Now().Unix(),
			"content":  []map[string]string{{"type": "text", "text": text}},
			"metadata": map[string]bool{"userVisible": true, "agentVisible": true},
		},
	}
	resp, err := postApp(ctx, c, projectID, "/reply", msg, api.ContentTypeEventStream)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	for ev, err := range sdk.ReadSSE(resp.Body) {
		if err != nil {
			return err
		}
		var frame struct {
			Type    string `json:"type"`
			Error   string `json:"error"`
			Message struct {
				Role    string `json:"role"`
				Content []struct {
					Type string `json:"type"`
					Text string `json:"text"`
				} `json:"content"`
			} `json:"message"`
		}
		if err := json.Unmarshal([]byte(ev.Data), &frame); err != nil {
			return fmt.Errorf("decode a /reply frame: %w", err)
		}
		switch frame.Type {
		case "Message":
			for _, part := range frame.Message.Content {
				if part.Type == "text" && frame.Message.Role == "assistant" {
					fmt.Fprint(out, part.Text)
				}
			}
		case "Error":
			return fmt.Errorf("the agent failed: %s", frame.Error)
		case "Finish":
			return nil
		}
	}
	return errors.New("the reply stream ended before Finish")
}
