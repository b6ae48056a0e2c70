package mirrorbed

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"
)

// The protected service is the running program itself (the test binary,
// the demo, a benchmark: anything that imports this package), started
// again by the module's start_prim script with these variables set. It is
// then a real process in the node's namespace that kill -9 and SIGSTOP hit
// like the agent, and there is no extra binary to build or install.
const (
	// serviceEnv: serve HTTP on this address, answering serviceLabelEnv.
	serviceEnv      = "HALO_MIRRORBED_SERVE"
	serviceLabelEnv = "HALO_MIRRORBED_LABEL"
	// probeEnv: exit 0 once a TCP connection to this address succeeds,
	// 1 after probeTimeout (start_prim waits for its service this way).
	probeEnv     = "HALO_MIRRORBED_PROBE"
	probeTimeout = 10 * time.Second
)

func init() {
	if addr := os.Getenv(serviceEnv); addr != "" {
		os.Exit(serve(addr, os.Getenv(serviceLabelEnv)))
	}
	if addr := os.Getenv(probeEnv); addr != "" {
		os.Exit(probe(addr))
	}
}

// serve answers every request with the label (the node's name) and a
// newline: the client learns who holds the VIP from the answer.
func serve(addr, label string) int {
	srv := &http.Server{
		Addr: addr,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			io.WriteString(w, label+"\n")
		}),
		ReadHeaderTimeout: 5 * time.Second,
	}
	if err := srv.ListenAndServe(); err != nil {
		fmt.Fprintf(os.Stderr, "mirrorbed service: %v\n", err)
		return 1
	}
	return 0
}

func probe(addr string) int {
	deadline := time.Now().Add(probeTimeout)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return 0
		}
		time.Sleep(10 * time.Millisecond)
	}
	fmt.Fprintf(os.Stderr, "mirrorbed probe: nothing listens on %s after %v\n", addr, probeTimeout)
	return 1
}
