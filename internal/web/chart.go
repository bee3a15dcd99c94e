package web

import (
	"fmt"
	"html/template"
	"strings"
	"time"

	"github.com/paddock-dev/paddock/api"
)

// bars is a bar chart of one series over time buckets, drawn as SVG on
// the server, so it needs no script.
type bars struct {
	// Label says what the chart shows, for screen readers ("Daily cost").
	Label string
	// Starts are the buckets' starts, Values their figures (as long).
	Starts []time.Time
	Values []float64
	// Tick formats a bucket's start under the axis, At in a bar's tooltip
	// (Tick if ""), and Tip the bar's value there.
	Tick, At string
	Tip      func(i int) string
	// Peak describes the highest value in the aria label.
	Peak func(v float64) string
	// Height of the drawing (160 if 0).
	Height int
}

// svg draws b. Everything written comes from numbers, times and the
// caller's formats, escaped all the same.
func (b bars) svg() template.HTML {
	n := len(b.Values)
	peak := 0.0
	for _, v := range b.Values {
		peak = max(peak, v)
	}
	h := b.Height
	if h == 0 {
		h = 160
	}
	const w, pad = 600, 20
	bw := float64(w-2*pad) / float64(max(n, 1))
	// At most ~8 labels under the axis, the first and last always.
	every := max(1, (n+7)/8)
	at := b.At
	if at == "" {
		at = b.Tick
	}
	var s strings.Builder
	fmt.Fprintf(&s, `<svg class="chart" viewBox="0 0 %d %d" role="img" aria-label="%s">`, w, h+pad, template.HTMLEscapeString(
		fmt.Sprintf("%s over %d buckets, at most %s", b.Label, n, b.Peak(peak))))
	fmt.Fprintf(&s, `<line x1="%d" y1="%d" x2="%d" y2="%d" class="axis"/>`, pad, h, w-pad, h)
	for i, v := range b.Values {
		bh := 0.0
		if peak > 0 {
			bh = v / peak * float64(h-pad)
		}
		fmt.Fprintf(&s, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f"><title>%s</title></rect>`,
			float64(pad)+float64(i)*bw+min(1, bw/4), float64(h)-bh, max(bw-2*min(1, bw/4), 0.5), bh,
			template.HTMLEscapeString(b.Starts[i].UTC().Format(at)+": "+b.Tip(i)))
		if i == 0 || i == n-1 || (i%every == 0 && n-1-i >= every/2+1) {
			fmt.Fprintf(&s, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`, float64(pad)+(float64(i)+0.5)*bw, h+14,
				template.HTMLEscapeString(b.Starts[i].UTC().Format(b.Tick)))
		}
	}
	s.WriteString(`</svg>`)
	return template.HTML(s.String()) // built from numbers, times and escaped text only
}

// costChart draws the daily cost of rows, one bar a day from since.
func costChart(rows []api.Usage, since time.Time, days int) template.HTML {
	b := bars{Label: "Daily cost", Starts: make([]time.Time, days), Values: make([]float64, days), Tick: "01-02", At: "2006-01-02",
		Peak: func(v float64) string { return fmt.Sprintf("%.2f a day", v) }}
	for i := range days {
		b.Starts[i] = since.AddDate(0, 0, i)
	}
	for _, u := range rows {
		i := int(u.Start.UTC().Sub(since) / (24 * time.Hour))
		if i >= 0 && i < days {
			b.Values[i] += u.Cost.Total
		}
	}
	b.Tip = func(i int) string { return fmt.Sprintf("%.4f", b.Values[i]) }
	return b.svg()
}
