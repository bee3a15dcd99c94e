package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/sdk"
)

// webhookCmd manages the caller's team's webhooks.
func webhookCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	sc, err := newSubcommand("webhook", "add, ls, rm, deliveries", args, stderr)
	if err != nil {
		return err
	}
	switch sc.verb {
	case "add", "create":
		secret := sc.fs.String("secret", "", "signing secret, 16-256 bytes (default: generated and printed once)")
		var types listFlag
		sc.fs.Var(&types, "type", `send only this event type, or a prefix such as "sandbox.*" (repeatable; default all)`)
		c, err := sc.connect(1, "<url>")
		if err != nil {
			return err
		}
		h, err := c.AddWebhook(ctx, api.WebhookRequest{URL: sc.fs.Arg(0), Secret: *secret, Types: types})
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s\nsecret: %s\n", h.ID, h.Secret)
		return nil

	case "ls", "list":
		c, err := sc.connect(0, "no arguments")
		if err != nil {
			return err
		}
		hooks, err := c.ListWebhooks(ctx)
		if err != nil {
			return err
		}
		t := newTable(stdout, "ID", "TEAM", "URL", "TYPES", "CREATED")
		for _, h := range hooks {
			types := strings.Join(h.Types, ",")
			if types == "" {
				types = "*"
			}
			t.row(h.ID, h.TeamID, h.URL, types, ago(h.CreatedAt))
		}
		return t.flush()

	case "rm", "remove":
		c, err := sc.connect(1, "<webhook-id>")
		if err != nil {
			return err
		}
		return c.DeleteWebhook(ctx, sc.fs.Arg(0))

	case "deliveries":
		state := sc.fs.String("state", "", "only deliveries in this state (pending, delivered, failed)")
		c, err := sc.connect(1, "<webhook-id>")
		if err != nil {
			return err
		}
		t := newTable(stdout, "SEQ", "TYPE", "STATE", "ATTEMPTS", "LAST STATUS", "LAST ERROR")
		var after int64
		for {
			page, err := c.WebhookDeliveries(ctx, sc.fs.Arg(0), *state, after, 0)
			if err != nil {
				return err
			}
			for _, d := range page.Deliveries {
				t.row(fmt.Sprint(d.EventSeq), d.EventType, d.State, fmt.Sprint(d.Attempts), fmt.Sprint(d.LastStatus), d.LastError)
			}
			if page.NextAfter == 0 {
				return t.flush()
			}
			after = page.NextAfter
		}
	}
	return usagef("webhook: unknown subcommand %q", sc.verb)
}

// eventsCmd follows the caller's team's lifecycle events, one JSON line
// each, until interrupted; it reconnects after the last event seen when
// the server ends a stream.
func eventsCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("events", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cf clientFlags
	cf.register(fs)
	var types listFlag
	fs.Var(&types, "type", `only this event type, or a prefix such as "sandbox.*" (repeatable)`)
	sandboxID := fs.String("sandbox", "", "only this sandbox's events")
	project := fs.String("project", "", "only this project's events")
	after := fs.Int64("after", -1, "start after this event seq (0: from the first kept; default: new events only)")
	if err := fs.Parse(args); err != nil {
		return usagef("events: %v", err)
	}
	if fs.NArg() > 0 {
		return usagef("events: unexpected arguments %q", fs.Args())
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	opts := sdk.EventOptions{Types: types, SandboxID: *sandboxID, ProjectID: *project}
	switch {
	case *after == 0:
		opts.FromStart = true
	case *after > 0:
		opts.After = *after
	}
	enc := json.NewEncoder(stdout)
	for ctx.Err() == nil {
		for e, err := range c.Events(ctx, opts) {
			if err != nil {
				return err
			}
			if err := enc.Encode(e); err != nil {
				return err
			}
			opts.After, opts.FromStart = e.Seq, false
		}
		if opts.After == 0 {
			opts.FromStart = false // nothing came: go on with new events only
		}
	}
	return nil
}
