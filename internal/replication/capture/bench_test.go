package capture

import (
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/halo-ha/halo/internal/replication/op"
)

// nullPeer is a sink and journal that return at once: the benchmarks
// measure the capture path alone.
type nullPeer struct{}

func (nullPeer) Submit(context.Context, op.Op) error { return nil }
func (nullPeer) Sync(context.Context, op.Op) error   { return nil }
func (nullPeer) Mark(op.Op) (Ticket, error)          { return 0, nil }
func (nullPeer) Done(Ticket, bool)                   {}

// benchDirs runs fn on a plain directory and on a capture mount; under is
// where the files are on the disk.
func benchDirs(b *testing.B, fn func(b *testing.B, dir, under string)) {
	b.Run("plain", func(b *testing.B) {
		dir := b.TempDir()
		fn(b, dir, dir)
	})
	b.Run("capture", func(b *testing.B) {
		m := mountTest(b, Options{Sink: nullPeer{}, Journal: nullPeer{}}, nil)
		fn(b, m.dir, m.under)
	})
}

// BenchmarkSeqWrite writes 256 MiB in 1 MiB blocks to a new file.
func BenchmarkSeqWrite(b *testing.B) {
	const total, block = 256 << 20, 1 << 20
	buf := pattern(block, 1)
	benchDirs(b, func(b *testing.B, dir, under string) {
		b.SetBytes(total)
		for i := 0; b.Loop(); i++ {
			p := filepath.Join(dir, "seq")
			f, err := os.Create(p)
			if err != nil {
				b.Fatal(err)
			}
			for off := 0; off < total; off += block {
				if _, err := f.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
			f.Close()
			os.Remove(p)
		}
	})
}

// BenchmarkWrite4KFsync writes 4 KiB at a random aligned offset of a
// 64 MiB file and fsyncs it, once per iteration.
func BenchmarkWrite4KFsync(b *testing.B) {
	buf := pattern(4096, 2)
	benchDirs(b, func(b *testing.B, dir, under string) {
		f, err := os.Create(filepath.Join(dir, "rand"))
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		if err := f.Truncate(64 << 20); err != nil {
			b.Fatal(err)
		}
		rng := rand.New(rand.NewPCG(1, 2))
		fd := int(f.Fd())
		for b.Loop() {
			if _, err := unix.Pwrite(fd, buf, int64(rng.IntN(64<<20/4096))*4096); err != nil {
				b.Fatal(err)
			}
			if err := unix.Fsync(fd); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkSeqRead reads a 256 MiB file in 1 MiB blocks from the disk:
// the page cache is dropped for the file (and the underlying file) first.
func BenchmarkSeqRead(b *testing.B) {
	const total, block = 256 << 20, 1 << 20
	benchDirs(b, func(b *testing.B, dir, under string) {
		p := filepath.Join(dir, "big")
		f, err := os.Create(p)
		if err != nil {
			b.Fatal(err)
		}
		buf := pattern(block, 3)
		for off := 0; off < total; off += block {
			f.Write(buf)
		}
		f.Sync()
		f.Close()
		b.SetBytes(total)
		for b.Loop() {
			f, err := os.Open(p)
			if err != nil {
				b.Fatal(err)
			}
			unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
			if u, err := os.Open(filepath.Join(under, "big")); err == nil {
				unix.Fadvise(int(u.Fd()), 0, 0, unix.FADV_DONTNEED)
				u.Close()
			}
			for {
				n, err := f.Read(buf)
				if n == 0 || err != nil {
					break
				}
			}
			f.Close()
		}
	})
}
