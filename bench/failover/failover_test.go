package failover

import (
	"context"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/halo-ha/halo/test/testbed"
)

// TestKeepalivedSmoke runs the harness for real: keepalived with fast timers
// on a bed, two crashes. The VIP must move node1 → node2 → node1, each
// outage must be seen and short, and nothing may outlive the run.
func TestKeepalivedSmoke(t *testing.T) {
	testbed.RequireRoot(t)
	if _, err := exec.LookPath("keepalived"); err != nil {
		msg := "KEEPALIVED NOT INSTALLED (apt-get install keepalived): the failover smoke test did NOT run"
		if os.Getenv("HALO_REQUIRE_ROOT") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	k, err := NewKeepalived(KeepalivedFast)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, fault := range []Fault{Kill9, PowerOff} {
		t.Run(string(fault), func(t *testing.T) {
			res, err := Run(ctx, k, Options{Kills: 2, Fault: fault, TB: t, Logf: t.Logf})
			if err != nil {
				t.Fatal(err)
			}
			want := [][2]string{{"node1", "node2"}, {"node2", "node1"}}
			if len(res.Samples) != len(want) {
				t.Fatalf("%d samples, want %d", len(res.Samples), len(want))
			}
			for i, s := range res.Samples {
				if s.Before != want[i][0] || s.After != want[i][1] {
					t.Errorf("crash %d: client served by %q then %q, want %s then %s", i+1, s.Before, s.After, want[i][0], want[i][1])
				}
				// The backup waits 3 adverts plus a skew from the last
				// advert it heard, which the crash follows by up to one
				// advert: an outage under 2 adverts was not measured, one
				// over 3 s is broken.
				if lo := 2 * KeepalivedFast.AdvertInt; s.Gap < lo || s.Gap > 3*time.Second {
					t.Errorf("crash %d: outage %v, want between %v and 3s", i+1, s.Gap, lo)
				}
				if s.ExtraGaps != 0 {
					t.Errorf("crash %d: %d more outages before %s was back as a standby", i+1, s.ExtraGaps, s.Killed)
				}
				if s.Failed == 0 {
					t.Errorf("crash %d: outage of %v without a failed probe", i+1, s.Gap)
				}
			}
			procs := k.processes()
			if len(procs) != 4 { // two at start, one per recovery
				t.Errorf("%d keepalived processes started, want 4", len(procs))
			}
			for _, p := range procs {
				if !p.Exited() {
					t.Errorf("keepalived %s on %s (pid %d) still running after the run", p.Name, p.Host.Name, p.PID())
				}
			}
			for _, h := range k.currentSetup().Bed.Hosts() {
				if _, err := os.Stat(h.NetnsPath()); !os.IsNotExist(err) {
					t.Errorf("namespace of %s still there after the run (stat: %v)", h.Name, err)
				}
			}
		})
	}
}

func TestSummarise(t *testing.T) {
	var r Result
	for _, ms := range []int{900, 100, 300, 200, 1000, 500, 400, 700, 600, 800} {
		r.Samples = append(r.Samples, Sample{Gap: time.Duration(ms) * time.Millisecond})
	}
	r.Samples[3].ExtraGaps = 2
	got := Summarise(r)
	want := Row{N: 10, Min: 100 * time.Millisecond, Median: 500 * time.Millisecond,
		P90: 900 * time.Millisecond, Max: 1000 * time.Millisecond, Flaps: 1}
	if got != want {
		t.Errorf("Summarise = %+v, want %+v", got, want)
	}
	if got := Summarise(Result{}); got.N != 0 || got.Max != 0 {
		t.Errorf("empty result summarised as %+v", got)
	}
	one := Summarise(Result{Samples: []Sample{{Gap: time.Second}}})
	if one.Min != time.Second || one.Median != time.Second || one.P90 != time.Second || one.Max != time.Second {
		t.Errorf("one sample summarised as %+v", one)
	}
}

func TestFormatTable(t *testing.T) {
	out := FormatTable([]Row{
		{System: "keepalived 2.2.7", Fault: Kill9, Timers: "fast", N: 10, Min: 380 * time.Millisecond,
			Median: 400 * time.Millisecond, P90: 420 * time.Millisecond, Max: 1500 * time.Millisecond},
		{System: "halo", Fault: Kill9, Timers: "fast"},
	})
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 4 {
		t.Fatalf("want header, rule and 2 rows, got:\n%s", out)
	}
	for _, want := range []string{"system", "fault", "timers", "n", "min", "median", "p90", "max", "flaps"} {
		if !strings.Contains(lines[0], want) {
			t.Errorf("header %q lacks %q", lines[0], want)
		}
	}
	if !strings.Contains(lines[2], "| 380 ms |") || !strings.Contains(lines[2], "| 1500 ms |") {
		t.Errorf("row %q lacks its durations", lines[2])
	}
	var fields []string
	for _, f := range strings.Split(lines[3], "|") {
		fields = append(fields, strings.TrimSpace(f))
	}
	if want := []string{"halo", "kill9", "fast", "0", "-", "-", "-", "-", "0"}; !slices.Equal(fields, want) {
		t.Errorf("row without samples = %q, want fields %q", lines[3], want)
	}
	// Aligned: every line has its separators at the same columns.
	for _, l := range lines[2:] {
		if strings.Index(l, "|") != strings.Index(lines[0], "|") || strings.LastIndex(l, "|") != strings.LastIndex(lines[0], "|") {
			t.Errorf("misaligned table:\n%s", out)
			break
		}
	}
}

func TestSampleOf(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	st := testbed.PollStats{
		Gaps: []testbed.Gap{
			{From: at(0), To: at(40), Failed: 1},     // before the crash: not the cluster's
			{From: at(100), To: at(500), Failed: 19}, // the failover
			{From: at(600), To: at(640), Failed: 1},  // a flap
		},
		Spans: []testbed.Span{
			{Answer: "node1", From: at(40), To: at(100)},
			{Answer: "node2", From: at(500), To: at(600)},
			{Answer: "node2", From: at(640), To: at(700)},
		},
	}
	s, err := sampleOf(st, at(110))
	if err != nil {
		t.Fatal(err)
	}
	want := Sample{Before: "node1", After: "node2", Gap: 400 * time.Millisecond, Failed: 19, ExtraGaps: 1}
	if s != want {
		t.Errorf("sampleOf = %+v, want %+v", s, want)
	}
	if _, err := sampleOf(st, at(700)); err == nil {
		t.Error("no outage after the crash: want an error")
	}
	st.Gaps[2].Open = true
	if s, err := sampleOf(st, at(610)); err == nil {
		t.Errorf("open outage: want an error, got %+v", s)
	}
}

func TestKeepalivedTimers(t *testing.T) {
	// RFC 5798: 3 × 100 ms + (256−100)/256 × 100 ms.
	if got, want := KeepalivedFast.MasterDown(100), 300*time.Millisecond+60937500*time.Nanosecond; got != want {
		t.Errorf("fast MasterDown(100) = %v, want %v", got, want)
	}
	// RFC 3768: 3 × 1 s + (256−100)/256 s.
	if got, want := KeepalivedDefault.MasterDown(100), 3*time.Second+609375*time.Microsecond; got != want {
		t.Errorf("default MasterDown(100) = %v, want %v", got, want)
	}
	if KeepalivedDefault.MasterDown(150) >= KeepalivedDefault.MasterDown(100) {
		t.Error("the higher priority must take over first")
	}
	if got, want := KeepalivedFast.String(), "fast: advert_int 0.1, VRRPv3, takeover after 0.34-0.36s"; got != want {
		t.Errorf("KeepalivedFast.String() = %q, want %q", got, want)
	}
	if got, want := KeepalivedDefault.String(), "default: advert_int 1, VRRPv2, takeover after 3.41-3.61s"; got != want {
		t.Errorf("KeepalivedDefault.String() = %q, want %q", got, want)
	}
	for _, bad := range []KeepalivedTimers{
		{AdvertInt: 100 * time.Millisecond, Version: 2}, // v2 has no sub-second adverts
		{AdvertInt: 105 * time.Millisecond, Version: 3}, // centiseconds only
		{AdvertInt: time.Second, Version: 4},
	} {
		if _, err := NewKeepalived(bad); err == nil {
			t.Errorf("NewKeepalived(%+v) accepted", bad)
		}
	}
}

func TestParseFault(t *testing.T) {
	for _, f := range []Fault{Kill9, PowerOff} {
		if got, err := ParseFault(string(f)); err != nil || got != f {
			t.Errorf("ParseFault(%q) = %q, %v", f, got, err)
		}
	}
	if _, err := ParseFault("reboot"); err == nil {
		t.Error(`ParseFault("reboot") accepted`)
	}
}
