package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/halo-ha/halo/sdk/api"
)

// printReplication prints what `halo status` shows of a module's file
// replication: mode, link, lag, throughput, and a resync's progress with
// its ETA; verbose adds the journal and the latest problem.
func printReplication(w io.Writer, m api.ModuleStatus, verbose bool) {
	r := m.Replication
	if r == nil {
		return
	}
	if !r.Up {
		fmt.Fprintf(w, "%s: replication daemon not answering at %s: %s\n", m.Module, r.UpdatedAt.Local().Format("15:04:05"), r.Error)
		return
	}
	fmt.Fprintf(w, "%s: replication %s\n", m.Module, replicationLine(r))
	if r.DataLossPossible {
		fmt.Fprintf(w, "%s: acknowledged writes not yet on %s (async): a failover now would lose them\n", m.Module, orDash(r.Peer))
	}
	if r.NotReady != "" {
		fmt.Fprintf(w, "%s: replicated directories not usable here: %s\n", m.Module, r.NotReady)
	}
	if p := r.Resync; p != nil && (p.Running || verbose) {
		fmt.Fprintf(w, "%s: %s\n", m.Module, resyncLine(p))
	}
	if !verbose {
		return
	}
	trust := "trusted"
	if !r.JournalTrusted {
		trust = "not trusted: the next resync is full"
	}
	fmt.Fprintf(w, "%s: journal %s (%s), dirty %d paths, %d zones (%s)\n", m.Module,
		formatBytes(float64(r.JournalBytes)), trust, r.DirtyPaths, r.DirtyZones, formatBytes(float64(r.DirtyBytes)))
	if r.Role == "source" && r.Connected {
		rtt := "unknown"
		if r.RTTSeconds > 0 {
			rtt = roundDuration(time.Duration(r.RTTSeconds * float64(time.Second)))
		}
		fmt.Fprintf(w, "%s: stream acknowledged %d applied, %d durable; round trip %s\n", m.Module, r.AckedOps, r.DurableOps, rtt)
	}
	if r.LastError != "" {
		fmt.Fprintf(w, "%s: replication problem: %s\n", m.Module, r.LastError)
	}
}

// replicationLine is e.g. "sync, source to n2, in sync (peer up to date),
// lag 1.2ms (3 in flight), 12.0 MiB/s, sent 1200 ops / 56.0 MiB".
func replicationLine(r *api.ReplicationStatus) string {
	var b strings.Builder
	b.WriteString(orDash(r.Mode))
	switch r.Role {
	case "source":
		fmt.Fprintf(&b, ", source to %s", orDash(r.Peer))
	case "target":
		fmt.Fprintf(&b, ", target of %s", orDash(r.Peer))
	default:
		b.WriteString(", no role")
	}
	fmt.Fprintf(&b, ", %s", orDash(r.Link))
	switch {
	case !r.Connected:
		b.WriteString(" (not connected")
	default:
		b.WriteString(" (connected")
	}
	who := "peer"
	if r.Role == "target" {
		who = "this node"
	}
	if r.PeerUpToDate {
		fmt.Fprintf(&b, ", %s up to date)", who)
	} else {
		fmt.Fprintf(&b, ", %s not up to date)", who)
	}
	if !r.StalledSince.IsZero() {
		fmt.Fprintf(&b, ", stalled since %s", r.StalledSince.Local().Format("15:04:05"))
	}
	if r.Role == "source" {
		lag := time.Duration(r.LagSeconds * float64(time.Second))
		fmt.Fprintf(&b, ", lag %s (%d ops, %s in flight)", roundDuration(lag), r.InFlight, formatBytes(float64(r.InFlightBytes)))
		if r.MaxLagSeconds > 0 {
			fmt.Fprintf(&b, " of max %s", roundDuration(time.Duration(r.MaxLagSeconds*float64(time.Second))))
		}
	}
	fmt.Fprintf(&b, ", %s/s", formatBytes(r.BytesPerSec))
	if r.Role == "source" {
		fmt.Fprintf(&b, ", sent %d ops / %s", r.OpsSent, formatBytes(float64(r.BytesSent)))
	}
	return b.String()
}

// resyncLine is e.g. "resync 4 (full) 45.0% (450.0 MiB of 1.0 GiB) at
// 30.0 MiB/s, ETA 20s".
func resyncLine(p *api.ResyncProgress) string {
	kind := "incremental"
	if p.Full {
		kind = "full"
	}
	head := fmt.Sprintf("resync %d (%s) %.1f%% (%s of %s)", p.ID, kind, p.Percent,
		formatBytes(float64(p.DoneBytes)), formatBytes(float64(p.TotalBytes)))
	switch {
	case p.Error != "":
		return head + ", failed: " + p.Error
	case !p.Running:
		took := ""
		if !p.Finished.IsZero() && !p.Started.IsZero() {
			took = " in " + roundDuration(p.Finished.Sub(p.Started))
		}
		return fmt.Sprintf("%s, done%s, %s sent", head, took, formatBytes(float64(p.SentBytes)))
	}
	eta := "unknown"
	if p.ETASeconds > 0 {
		eta = roundDuration(time.Duration(p.ETASeconds * float64(time.Second)))
	}
	return fmt.Sprintf("%s at %s/s, ETA %s", head, formatBytes(p.BytesPerSec), eta)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// roundDuration keeps three significant figures or so: 1.23ms, 45.6s, 2m3s.
func roundDuration(d time.Duration) string {
	switch {
	case d <= 0:
		return "0s"
	case d < time.Millisecond:
		return d.Round(time.Microsecond).String()
	case d < time.Second:
		return d.Round(10 * time.Microsecond).String()
	case d < time.Minute:
		return d.Round(10 * time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}

// formatBytes prints a byte count with a binary unit: 512 B, 1.5 KiB, 3.0 GiB.
func formatBytes(n float64) string {
	if n < 1024 {
		return fmt.Sprintf("%.0f B", n)
	}
	units := []string{"KiB", "MiB", "GiB", "TiB", "PiB"}
	i := -1
	for n >= 1024 && i < len(units)-1 {
		n /= 1024
		i++
	}
	return fmt.Sprintf("%.1f %s", n, units[i])
}
