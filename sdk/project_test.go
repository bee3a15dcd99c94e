package sdk

import (
	"slices"
	"strings"
	"testing"
)

func TestReadSSE(t *testing.T) {
	stream := ": comment\n" +
		"event: queued\nid: 1\ndata: {\"a\":1}\n\n" +
		"data: line one\r\ndata: line two\n\n" +
		": ping\n\n" +
		"id: 7\nevent: ready\ndata:x\n\n" +
		"data: no blank line at the end"
	var got []SSEEvent
	for ev, err := range ReadSSE(strings.NewReader(stream)) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ev)
	}
	want := []SSEEvent{
		{Event: "queued", ID: "1", Data: `{"a":1}`},
		{Data: "line one\nline two"},
		{Event: "ready", ID: "7", Data: "x"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
}
