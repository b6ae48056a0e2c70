package replication

import (
	"testing"
	"time"
)

func TestMedianAndPercentile(t *testing.T) {
	if got := Median([]float64{3, 1, 2}); got != 2 {
		t.Fatalf("median of 3 values: %v", got)
	}
	if got := Median([]float64{4, 1, 3, 2}); got != 2.5 {
		t.Fatalf("median of 4 values: %v", got)
	}
	var ds []time.Duration
	for i := 100; i >= 1; i-- {
		ds = append(ds, time.Duration(i))
	}
	if p50, p99 := Percentile(ds, 50), Percentile(ds, 99); p50 != 50 || p99 != 99 {
		t.Fatalf("p50 %v p99 %v of 1..100", p50, p99)
	}
	if Percentile(nil, 50) != 0 || Median(nil) != 0 {
		t.Fatal("empty input")
	}
}

func TestWorkloadsOnTempDir(t *testing.T) {
	s := Full.Scale(0.001)
	dir := t.TempDir()
	seq, err := SeqWrite(dir, s.SeqBytes)
	if err != nil || seq.Bytes != s.SeqBytes {
		t.Fatalf("sequential: %+v, %v", seq, err)
	}
	r, err := RandWrite(dir, s.SeqBytes, 50*time.Millisecond)
	if err != nil || r.Ops == 0 || len(r.Lat) != r.Ops {
		t.Fatalf("random: ops %d lat %d, %v", r.Ops, len(r.Lat), err)
	}
	sf, err := SmallFiles(dir, 1001, 10)
	if err != nil || sf.Ops != 1001 {
		t.Fatalf("small files: %+v, %v", sf, err)
	}
}
