package testbed_test

import (
	"context"
	"fmt"
	"log"
	"net/netip"
	"time"

	"github.com/halo-ha/halo/test/testbed"
)

// Outside a test (the demo, a benchmark), New takes a nil testing.TB and the
// caller closes the bed. This measures the outage a client sees while a VIP
// moves from a crashed node to its peer; the moving is done by hand here,
// where the product would do it.
func Example() {
	bed, err := testbed.New(nil, testbed.Options{
		Hosts:    []string{"node1", "node2", "client"},
		Networks: []string{"default", "replication"},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer bed.Close()
	node1, node2, client := bed.Host("node1"), bed.Host("node2"), bed.Host("client")
	vip := netip.MustParsePrefix("198.18.0.100/24")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	for _, h := range []*testbed.Host{node1, node2} {
		if _, err := h.StartHTTPServer(8080); err != nil {
			log.Fatal(err)
		}
	}
	if err := node1.AddAddr("default", vip); err != nil {
		log.Fatal(err)
	}
	p, err := bed.Poller("client", netip.AddrPortFrom(vip.Addr(), 8080), testbed.PollerOptions{})
	if err != nil {
		log.Fatal(err)
	}
	if err := p.WaitAnswer(ctx, "node1"); err != nil {
		log.Fatal(err)
	}

	// The crash: every process of node1 killed, its cables cut.
	if err := node1.Kill9(); err != nil {
		log.Fatal(err)
	}
	if err := node1.CutAll(); err != nil {
		log.Fatal(err)
	}
	// The takeover. The product's vip plugin would announce the address
	// with gratuitous ARP; flushing the client's ARP cache stands in.
	if err := node2.AddAddr("default", vip); err != nil {
		log.Fatal(err)
	}
	if _, err := client.Run(ctx, "ip", "neigh", "flush", "dev", client.Iface("default")); err != nil {
		log.Fatal(err)
	}
	if err := p.WaitAnswer(ctx, "node2"); err != nil {
		log.Fatal(err)
	}
	stats := p.Stop()
	gap, _ := stats.FirstGap()
	fmt.Println("served by", stats.Answers(), "downtime", gap.Duration().Round(10*time.Millisecond))
}
