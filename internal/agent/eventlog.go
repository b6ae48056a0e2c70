package agent

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/halo-ha/halo/sdk/api"
)

// eventLog is a module's event log: every state change with its cause,
// every action and script run, kept on disk as JSON lines (so it survives
// agent restarts and `halo logs` shows history) and in memory for the API
// and live subscribers.
type eventLog struct {
	module, node string

	mu   sync.Mutex
	f    *os.File
	seq  uint64
	ring []api.Event // the newest maxRing events
	subs map[chan api.Event]struct{}
}

// maxRing bounds the events kept in memory; the file keeps everything.
const maxRing = 10000

// subBuffer is a subscriber's queue; a subscriber that falls this far behind
// is dropped (its stream ends and the client reconnects with ?after=).
const subBuffer = 256

func openEventLog(path, module, node string) (*eventLog, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("create event log dir: %w", err)
	}
	l := &eventLog{module: module, node: node, subs: map[chan api.Event]struct{}{}}
	if f, err := os.Open(path); err == nil {
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			var e api.Event
			if json.Unmarshal(sc.Bytes(), &e) != nil {
				continue // a torn last line after a crash
			}
			l.seq = max(l.seq, e.Seq)
			l.ring = append(l.ring, e)
			if len(l.ring) > maxRing {
				l.ring = l.ring[len(l.ring)-maxRing:]
			}
		}
		f.Close()
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_RDWR, 0o640)
	if err != nil {
		return nil, fmt.Errorf("open event log: %w", err)
	}
	if err := dropTornTail(f); err != nil {
		f.Close()
		return nil, err
	}
	l.f = f
	return l, nil
}

// add appends an event, writes it to disk and fans it out.
func (l *eventLog) add(kind, level, text string) api.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seq++
	e := api.Event{Seq: l.seq, Time: time.Now().UTC(), Module: l.module, Node: l.node, Kind: kind, Level: level, Text: text}
	if b, err := json.Marshal(e); err == nil {
		// The log is diagnostic, not state: a failed write must not stop HA.
		_, _ = l.f.Write(append(b, '\n'))
	}
	l.ring = append(l.ring, e)
	if len(l.ring) > maxRing {
		l.ring = l.ring[len(l.ring)-maxRing:]
	}
	for ch := range l.subs {
		select {
		case ch <- e:
		default:
			delete(l.subs, ch)
			close(ch)
		}
	}
	return e
}

// since returns up to limit events with Seq > after (limit 0 = all kept).
func (l *eventLog) since(after uint64, limit int) []api.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.sinceLocked(after, limit)
}

func (l *eventLog) sinceLocked(after uint64, limit int) []api.Event {
	var out []api.Event
	for _, e := range l.ring {
		if e.Seq > after {
			out = append(out, e)
			if limit > 0 && len(out) == limit {
				break
			}
		}
	}
	return out
}

// subscribe returns a channel that first replays events after `after`, then
// carries new ones.
func (l *eventLog) subscribe(after uint64) (<-chan api.Event, func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	backlog := l.sinceLocked(after, 0)
	ch := make(chan api.Event, subBuffer+len(backlog))
	for _, e := range backlog {
		ch <- e
	}
	l.subs[ch] = struct{}{}
	return ch, func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		if _, ok := l.subs[ch]; ok {
			delete(l.subs, ch)
			close(ch)
		}
	}
}

func (l *eventLog) close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for ch := range l.subs {
		delete(l.subs, ch)
		close(ch)
	}
	return l.f.Close()
}

// dropTornTail truncates a partial last line left by a crash, so the next
// event starts on a line of its own instead of being glued to the torn one.
func dropTornTail(f *os.File) error {
	st, err := f.Stat()
	if err != nil || st.Size() == 0 {
		return err
	}
	const chunk = 64 << 10
	size := st.Size()
	for end := size; end > 0; {
		start := max(0, end-chunk)
		buf := make([]byte, end-start)
		if _, err := f.ReadAt(buf, start); err != nil {
			return fmt.Errorf("read event log tail: %w", err)
		}
		if i := bytes.LastIndexByte(buf, '\n'); i >= 0 {
			if cut := start + int64(i) + 1; cut != size {
				return f.Truncate(cut)
			}
			return nil
		}
		end = start
	}
	return f.Truncate(0)
}
