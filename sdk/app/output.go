package app

import (
	"bytes"
	"errors"
	"sync"

	pluginv1 "github.com/halo-ha/halo/sdk/proto/halo/plugin/v1"
)

// maxLine bounds a line sent to the host; a longer one is cut into pieces,
// so a script printing megabytes without a newline cannot exhaust memory.
const maxLine = 64 << 10

var errOutputClosed = errors.New("run output closed: the run has ended")

// lineSender turns a run's two output streams into OutputLine events on
// one gRPC stream, which allows one Send at a time.
type lineSender struct {
	mu     sync.Mutex
	send   func(*pluginv1.RunEvent) error
	closed bool
	err    error // first Send failure: the host has gone
}

type lineWriter struct {
	s      *lineSender
	stream pluginv1.OutputStream
	buf    []byte
}

func newOutput(send func(*pluginv1.RunEvent) error) (*lineSender, *lineWriter, *lineWriter) {
	s := &lineSender{send: send}
	return s,
		&lineWriter{s: s, stream: pluginv1.OutputStream_OUTPUT_STREAM_STDOUT},
		&lineWriter{s: s, stream: pluginv1.OutputStream_OUTPUT_STREAM_STDERR}
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	if w.s.closed {
		return len(p), nil // late writes from a leaked goroutine are dropped
	}
	if w.s.err != nil {
		return 0, w.s.err
	}
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 && len(w.buf) < maxLine {
			break
		}
		end, next := i, i+1
		if i < 0 || i > maxLine {
			end, next = maxLine, maxLine
		}
		if err := w.emit(w.buf[:end]); err != nil {
			return 0, err
		}
		w.buf = w.buf[next:]
	}
	// Keep the buffer's memory bounded by what is pending.
	if len(w.buf) == 0 {
		w.buf = nil
	}
	return len(p), nil
}

// emit sends one line; the caller holds the mutex.
func (w *lineWriter) emit(text []byte) error {
	line := &pluginv1.OutputLine{Stream: w.stream, Text: bytes.Clone(text)}
	if err := w.s.send(&pluginv1.RunEvent{Event: &pluginv1.RunEvent_Line{Line: line}}); err != nil {
		w.s.err = err
		return err
	}
	return nil
}

// close sends what is left of unterminated lines and drops later writes.
// It returns the first send error, if any.
func (s *lineSender) close(writers ...*lineWriter) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, w := range writers {
		if len(w.buf) > 0 && s.err == nil {
			_ = w.emit(w.buf)
		}
		w.buf = nil
	}
	s.closed = true
	return s.err
}
