package capture

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/halo-ha/halo/internal/replication/op"
)

// Each 1 MiB application write reaches the capture as one request (one
// op), not eight 128 KiB ones: max_pages is negotiated up to op.MaxData.
func TestLargeWritesStayWhole(t *testing.T) {
	m := mountTest(t, Options{}, nil)
	f, err := os.Create(filepath.Join(m.dir, "big"))
	must(t, err)
	for i := range 4 {
		_, err := f.Write(pattern(op.MaxData, byte(i)))
		must(t, err)
	}
	must(t, f.Close())
	writes := 0
	for _, o := range m.rec.snapshot() {
		if o.Kind == op.Write {
			writes++
			if len(o.Data) != op.MaxData {
				t.Errorf("write of %d bytes", len(o.Data))
			}
		}
	}
	if writes != 4 {
		t.Errorf("%d write ops for 4 MiB in 1 MiB writes, want 4", writes)
	}
}
