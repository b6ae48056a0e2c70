package config

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// ParseDuration parses a duration written as Go does ("700ms", "10s",
// "1h30m"), with an error that says what is accepted.
func ParseDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q: write a number and a unit (ms, s, m, h), e.g. \"700ms\", \"10s\", \"24h\"", s)
	}
	return d, nil
}

// Size units: decimal (kB, MB, GB, TB, as disks are sold) and binary
// (KiB, MiB, GiB, TiB, as memory and zones are counted).
var sizeUnits = map[string]float64{
	"":    1,
	"b":   1,
	"k":   1e3,
	"kb":  1e3,
	"m":   1e6,
	"mb":  1e6,
	"g":   1e9,
	"gb":  1e9,
	"t":   1e12,
	"tb":  1e12,
	"kib": 1 << 10,
	"mib": 1 << 20,
	"gib": 1 << 30,
	"tib": 1 << 40,
}

// Bandwidth units in bits, for those who think in link speeds.
var bitUnits = map[string]float64{
	"bit":  1.0 / 8,
	"kbit": 1e3 / 8,
	"mbit": 1e6 / 8,
	"gbit": 1e9 / 8,
}

var errSizeSyntax = errors.New("bad syntax")

// ParseSize parses a byte count such as "64KiB", "8MiB", "1.5GB" or "4096".
func ParseSize(s string) (int64, error) {
	n, err := parseScaled(s, sizeUnits)
	if err != nil {
		return 0, fmt.Errorf("invalid size %q: write a number and a unit (B, kB, MB, GB, TB, KiB, MiB, GiB, TiB), e.g. \"64KiB\"", s)
	}
	return n, nil
}

// ParseBandwidth parses a rate in bytes per second such as "100MB/s" or
// "40MiB/s", or in bits per second such as "1Gbit/s".
func ParseBandwidth(s string) (int64, error) {
	t := strings.TrimSpace(s)
	rate, ok := strings.CutSuffix(t, "/s")
	var n int64
	var err error = errSizeSyntax
	if ok {
		n, err = parseScaled(rate, bitUnits)
		if err != nil {
			n, err = parseScaled(rate, sizeUnits)
		}
	}
	if err != nil {
		return 0, fmt.Errorf("invalid bandwidth %q: write a size per second, e.g. \"100MB/s\", \"40MiB/s\" or \"1Gbit/s\"", s)
	}
	return n, nil
}

func parseScaled(s string, units map[string]float64) (int64, error) {
	s = strings.TrimSpace(s)
	i := 0
	for i < len(s) && (s[i] >= '0' && s[i] <= '9' || s[i] == '.') {
		i++
	}
	if i == 0 {
		return 0, errSizeSyntax
	}
	num, err := strconv.ParseFloat(s[:i], 64)
	if err != nil {
		return 0, errSizeSyntax
	}
	mult, ok := units[strings.ToLower(strings.TrimSpace(s[i:]))]
	if !ok {
		return 0, errSizeSyntax
	}
	v := num * mult
	if v > math.MaxInt64/2 || v != math.Trunc(v) {
		return 0, errSizeSyntax
	}
	return int64(v), nil
}

// FormatSize writes n with the largest binary unit that divides it, the
// way a zone size is usually written.
func FormatSize(n int64) string {
	for _, u := range []struct {
		name string
		size int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.size && n%u.size == 0 {
			return strconv.FormatInt(n/u.size, 10) + u.name
		}
	}
	return strconv.FormatInt(n, 10) + "B"
}
