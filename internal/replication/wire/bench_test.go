package wire

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/halo-ha/halo/internal/pki"
	"github.com/halo-ha/halo/internal/replication/apply"
	"github.com/halo-ha/halo/internal/replication/op"
)

// nullTarget applies nothing: the protocol's own ceiling.
type nullTarget struct{}

func (nullTarget) ApplyDeferred(op.Op, bool) error { return nil }
func (nullTarget) Flush() error                    { return nil }
func (nullTarget) SyncAll() error                  { return nil }

// BenchmarkStream measures the replicated write path (sync mode, Sender →
// loopback → Serve → target), one operation per iteration:
//
//	write1M       1 MiB writes, sequential in a 1 GiB file
//	write4K+sync  a 4 KiB write at a random offset, then its fsync
//
// with 1 or several concurrent writers, over plain TCP or mutual TLS, to
// a real tree on disk or to a target that discards. 1 GiB of 1 MiB writes:
//
//	go test -run '^$' -bench 'Stream/.*/.*/write1M' -benchtime 1024x ./internal/replication/wire
//	go test -run '^$' -bench 'Stream/.*/.*/write4K' -benchtime 5000x ./internal/replication/wire
func BenchmarkStream(b *testing.B) {
	material := sync.OnceValue(func() map[string]*pki.Material { return clusterMaterial(b) })
	for _, conn := range []string{"tcp", "tls"} {
		for _, target := range []string{"disk", "null"} {
			for _, wl := range []struct {
				name    string
				size    int
				sync    bool
				writers int
			}{
				{"write1M", 1 << 20, false, 1},
				{"write1M-4writers", 1 << 20, false, 4},
				{"write4K+sync", 4 << 10, true, 1},
				{"write4K+sync-16writers", 4 << 10, true, 16},
			} {
				if target == "null" && wl.sync {
					continue // fsync costs nothing there
				}
				b.Run(fmt.Sprintf("%s/%s/%s", conn, target, wl.name), func(b *testing.B) {
					var client, server net.Conn
					if conn == "tls" {
						c, s, _ := tlsPair(b, material(), "node1", "node2", "node1")
						client, server = c, s
					} else {
						client, server = tcpPair(b)
					}
					var t Target = nullTarget{}
					if target == "disk" {
						tree, err := apply.Open(b.TempDir())
						if err != nil {
							b.Fatal(err)
						}
						defer tree.Close()
						t = tree
					}
					st := startStream(b, client, server, t, 1, SenderOptions{Mode: ModeSync}, ReceiverOptions{})
					ctx := context.Background()
					for w := range wl.writers {
						if err := st.s.Submit(ctx, op.Op{Kind: op.Create, Path: fmt.Sprint("f", w), Mode: 0o644}); err != nil {
							b.Fatal(err)
						}
					}
					data := make([]byte, wl.size)
					for i := range data {
						data[i] = byte(i * 7)
					}
					lat := make([]time.Duration, b.N)
					var next atomic.Int64
					var wg sync.WaitGroup
					b.SetBytes(int64(wl.size))
					b.ResetTimer()
					start := time.Now()
					for w := range wl.writers {
						wg.Add(1)
						go func() {
							defer wg.Done()
							rng := rand.New(rand.NewPCG(uint64(w), 1))
							path := fmt.Sprint("f", w)
							for {
								i := next.Add(1) - 1
								if i >= int64(b.N) {
									return
								}
								off := (i * int64(wl.size)) % (1 << 30)
								if wl.sync {
									off = rng.Int64N(1<<30/int64(wl.size)) * int64(wl.size)
								}
								t0 := time.Now()
								err := st.s.Submit(ctx, op.Op{Kind: op.Write, Path: path, Off: off, Data: data})
								if err == nil && wl.sync {
									err = st.s.Sync(ctx, op.Op{Kind: op.Fsync, Path: path, Flags: op.DataOnly})
								}
								lat[i] = time.Since(t0)
								if err != nil {
									b.Error(err)
									return
								}
							}
						}()
					}
					wg.Wait()
					elapsed := time.Since(start)
					b.StopTimer()
					slices.Sort(lat)
					stats := st.s.Stats()
					b.ReportMetric(float64(b.N)/elapsed.Seconds(), "ops/s")
					b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
					b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
					b.ReportMetric(float64(stats.OpsSent)/float64(stats.FramesSent), "ops/frame")
				})
			}
		}
	}
}
