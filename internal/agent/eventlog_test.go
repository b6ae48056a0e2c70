package agent

import (
	"os"
	"path/filepath"
	"testing"
)

func TestEventLogPersistsAndStreams(t *testing.T) {
	path := filepath.Join(t.TempDir(), "web", "events.jsonl")
	l, err := openEventLog(path, "web", "n1")
	if err != nil {
		t.Fatal(err)
	}
	l.add("state", "info", "STOP -> UP: started by cli")
	ch, cancel := l.subscribe(0)
	defer cancel()
	l.add("script", "info", "start_both ok")
	for _, want := range []string{"STOP -> UP: started by cli", "start_both ok"} {
		if e := <-ch; e.Text != want {
			t.Fatalf("stream: got %q want %q", e.Text, want)
		}
	}
	l.close()

	// A torn last line (crash mid-write) is skipped; numbering continues.
	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"seq":3,"te`)
	f.Close()
	l2, err := openEventLog(path, "web", "n1")
	if err != nil {
		t.Fatal(err)
	}
	if got := l2.since(0, 0); len(got) != 2 || got[1].Seq != 2 {
		t.Fatalf("reloaded %+v", got)
	}
	if e := l2.add("log", "info", "after restart"); e.Seq != 3 {
		t.Fatalf("seq after reload = %d, want 3", e.Seq)
	}
	if got := l2.since(1, 1); len(got) != 1 || got[0].Seq != 2 {
		t.Fatalf("since(1,1) = %+v", got)
	}
	l2.close()
	l3, err := openEventLog(path, "web", "n1")
	if err != nil {
		t.Fatal(err)
	}
	defer l3.close()
	if got := l3.since(2, 0); len(got) != 1 || got[0].Text != "after restart" {
		t.Fatalf("event written after a torn line was lost: %+v", got)
	}
}
