package tcp

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/halo-ha/halo/sdk/base"
	"github.com/halo-ha/halo/sdk/checker"
	"github.com/halo-ha/halo/sdk/sdktest"
)

// server accepts on 127.0.0.1 and hands each connection to handle; it is
// closed (listener and connections) when the test ends.
func server(t *testing.T, handle func(net.Conn)) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				if handle != nil {
					handle(c)
				}
			}()
		}
	}()
	t.Cleanup(func() {
		_ = l.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return l
}

func configure(t *testing.T, src string) (*Checker, error) {
	t.Helper()
	c := New().(*Checker)
	value := sdktest.DecodeConfig(t, c.Schema(), src)
	return c, c.Configure(context.Background(), &base.Config{Module: sdktest.TestModule(t, "t"), Value: value, Logger: sdktest.Logger(t)})
}

func mustCheck(t *testing.T, ctx context.Context, c *Checker) checker.Result {
	t.Helper()
	res, err := c.Check(ctx)
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	return res
}

func TestConnectThenRefused(t *testing.T) {
	l := server(t, func(c net.Conn) { _ = c.Close() })
	addr := l.Addr().String()
	c, err := configure(t, fmt.Sprintf("address = %q\n", addr))
	if err != nil {
		t.Fatal(err)
	}
	res := mustCheck(t, context.Background(), c)
	if res.Status != checker.StatusUp || !strings.HasPrefix(res.Message, "connected to "+addr) {
		t.Errorf("listening: %s %q", res.Status, res.Message)
	}
	_ = l.Close()
	res = mustCheck(t, context.Background(), c)
	if res.Status != checker.StatusDown || !strings.Contains(res.Message, "connection refused") {
		t.Errorf("closed: %s %q, want down with connection refused", res.Status, res.Message)
	}
}

func TestSendExpect(t *testing.T) {
	echo := server(t, func(c net.Conn) {
		buf := make([]byte, 64)
		n, _ := c.Read(buf)
		if strings.HasPrefix(string(buf[:n]), "PING") {
			_, _ = c.Write([]byte("+PONG\r\n"))
		} else {
			_, _ = c.Write([]byte("-ERR unknown\r\n"))
		}
		_ = c.Close()
	})
	cfg := func(send, expect string) string {
		return fmt.Sprintf("address = %q\nsend = %q\nexpect = %q\ntimeout = \"2s\"\n", echo.Addr(), send, expect)
	}
	c, err := configure(t, cfg("PING\r\n", "PONG"))
	if err != nil {
		t.Fatal(err)
	}
	if res := mustCheck(t, context.Background(), c); res.Status != checker.StatusUp {
		t.Errorf("PING/PONG: %s %q", res.Status, res.Message)
	}
	c, err = configure(t, cfg("HELLO\r\n", "PONG"))
	if err != nil {
		t.Fatal(err)
	}
	res := mustCheck(t, context.Background(), c)
	if res.Status != checker.StatusDown || !strings.Contains(res.Message, "connection closed") || !strings.Contains(res.Message, "-ERR unknown") {
		t.Errorf("wrong answer: %s %q, want down naming the close and what came", res.Status, res.Message)
	}
}

func TestExpectTimesOut(t *testing.T) {
	silent := server(t, func(c net.Conn) { _, _ = c.Read(make([]byte, 1)) })
	c, err := configure(t, fmt.Sprintf("address = %q\nexpect = \"hello\"\ntimeout = \"200ms\"\n", silent.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	res := mustCheck(t, context.Background(), c)
	took := time.Since(start)
	if res.Status != checker.StatusDown || !strings.Contains(res.Message, "timed out") {
		t.Errorf("silent peer: %s %q, want down timed out", res.Status, res.Message)
	}
	if took < 200*time.Millisecond || took > 2*time.Second {
		t.Errorf("a 200ms timeout took %s", took)
	}
	// The check's own deadline wins when shorter than timeout.
	c, err = configure(t, fmt.Sprintf("address = %q\nexpect = \"hello\"\ntimeout = \"30s\"\n", silent.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start = time.Now()
	_, _ = c.Check(ctx)
	if took := time.Since(start); took > time.Second {
		t.Errorf("a 100ms check deadline took %s", took)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct{ src, want string }{
		{`address = "127.0.0.1"`, "address: want host:port"},
		{`address = ":80"`, "address: no host"},
		{`address = "127.0.0.1:0"`, "address: port \"0\""},
		{`address = "127.0.0.1:99999"`, "address: port \"99999\""},
		{`address = "127.0.0.1:80"` + "\n" + `timeout = "0s"`, "timeout: must be positive"},
	} {
		if _, err := configure(t, tc.src); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("config %q: error %v, want %q", tc.src, err, tc.want)
		}
	}
}

func TestConformance(t *testing.T) {
	// A peer that never answers makes the check block until its deadline.
	silent := server(t, func(c net.Conn) { _, _ = c.Read(make([]byte, 1)) })
	sdktest.CheckerConformance(t, New, fmt.Sprintf("address = %q\nexpect = \"never\"\ntimeout = \"300ms\"\n", silent.Addr()),
		sdktest.WithBadConfig(`address = "localhost"`),
		sdktest.WithBadConfig(`address = "127.0.0.1:80"`+"\ntimeout = \"-1s\"\n"))
}
