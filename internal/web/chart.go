package web

import (
	"fmt"
	"html/template"
	"strings"
	"time"

	"github.com/paddock-dev/paddock/api"
)

// costChart draws the daily cost of rows as an SVG bar chart, one bar a
// day from since. Server-rendered, so it needs no script.
func costChart(rows []api.Usage, since time.Time, days int) template.HTML {
	totals := make([]float64, days)
	for _, u := range rows {
		i := int(u.Start.UTC().Sub(since) / (24 * time.Hour))
		if i >= 0 && i < days {
			totals[i] += u.Cost.Total
		}
	}
	peak := 0.0
	for _, v := range totals {
		peak = max(peak, v)
	}
	const w, h, pad = 600, 160, 20
	bw := float64(w-2*pad) / float64(days)
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="chart" viewBox="0 0 %d %d" role="img" aria-label="Daily cost over the last %d days, at most %.2f a day">`, w, h+pad, days, peak)
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" class="axis"/>`, pad, h, w-pad, h)
	for i, v := range totals {
		bh := 0.0
		if peak > 0 {
			bh = v / peak * float64(h-pad)
		}
		day := since.AddDate(0, 0, i)
		fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f"><title>%s: %.4f</title></rect>`,
			float64(pad)+float64(i)*bw+1, float64(h)-bh, bw-2, bh, day.Format("2006-01-02"), v)
		if i == 0 || i == days-1 || days <= 14 {
			fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`, float64(pad)+(float64(i)+0.5)*bw, h+14, day.Format("01-02"))
		}
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String()) // built here from numbers and dates only
}
