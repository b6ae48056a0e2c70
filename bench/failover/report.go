package failover

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Row summarises one Result for the report table.
type Row struct {
	System, Timers string
	Fault          Fault
	N              int
	Min, Median    time.Duration
	P90, Max       time.Duration
	// Flaps counts the crashes after which the client saw more than one
	// outage before the crashed node was back as a standby.
	Flaps int
}

// Summarise computes a Result's row. Percentiles are nearest-rank: with 10
// samples the p90 is the 9th smallest, a value that was measured.
func Summarise(r Result) Row {
	gaps := slices.Clone(r.Gaps())
	slices.Sort(gaps)
	row := Row{System: r.System, Timers: r.Timers, Fault: r.Fault, N: len(gaps)}
	for _, s := range r.Samples {
		if s.ExtraGaps > 0 {
			row.Flaps++
		}
	}
	if len(gaps) == 0 {
		return row
	}
	row.Min, row.Max = gaps[0], gaps[len(gaps)-1]
	row.Median = nearestRank(gaps, 50)
	row.P90 = nearestRank(gaps, 90)
	return row
}

// nearestRank returns the p-th percentile of sorted, non-empty values: the
// smallest value with at least p% of the values at or below it.
func nearestRank(sorted []time.Duration, p int) time.Duration {
	rank := (p*len(sorted) + 99) / 100 // ceil(p/100 × n), 1-based
	return sorted[max(rank, 1)-1]
}

// FormatTable renders rows as an aligned, pipe-separated table, one row per
// (system, fault, timer setting), durations in milliseconds.
func FormatTable(rows []Row) string {
	header := []string{"system", "fault", "timers", "n", "min", "median", "p90", "max", "flaps"}
	cells := [][]string{header}
	for _, r := range rows {
		var stats []string
		if r.N == 0 {
			stats = []string{"-", "-", "-", "-"}
		} else {
			stats = []string{ms(r.Min), ms(r.Median), ms(r.P90), ms(r.Max)}
		}
		cells = append(cells, append(append([]string{r.System, string(r.Fault), r.Timers, fmt.Sprint(r.N)}, stats...), fmt.Sprint(r.Flaps)))
	}
	widths := make([]int, len(header))
	for _, row := range cells {
		for i, c := range row {
			widths[i] = max(widths[i], len(c))
		}
	}
	// Numbers align right, words left.
	numeric := []bool{false, false, false, true, true, true, true, true, true}
	var b strings.Builder
	for i, row := range cells {
		for j, c := range row {
			if j > 0 {
				b.WriteString(" | ")
			}
			if numeric[j] {
				fmt.Fprintf(&b, "%*s", widths[j], c)
			} else if j == len(row)-1 {
				b.WriteString(c)
			} else {
				fmt.Fprintf(&b, "%-*s", widths[j], c)
			}
		}
		b.WriteString("\n")
		if i == 0 {
			for j, w := range widths {
				if j > 0 {
					b.WriteString("-|-")
				}
				b.WriteString(strings.Repeat("-", w))
			}
			b.WriteString("\n")
		}
	}
	return b.String()
}

func ms(d time.Duration) string {
	return fmt.Sprintf("%d ms", d.Round(time.Millisecond).Milliseconds())
}
