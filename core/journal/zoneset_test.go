package journal

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// zoneModel is the naive zone set: one bool per zone of a bounded domain,
// and one for every zone past it (only NoEnd ranges reach there).
type zoneModel struct {
	z      []bool
	beyond bool
}

func (m *zoneModel) set(a, b uint64, v bool) {
	end := b
	if b == NoEnd {
		end = uint64(len(m.z))
		m.beyond = v
	}
	for i := a; i < end && i < uint64(len(m.z)); i++ {
		m.z[i] = v
	}
}

func (m *zoneModel) ranges() []ZoneRange {
	var out []ZoneRange
	for i := 0; i < len(m.z); {
		if !m.z[i] {
			i++
			continue
		}
		j := i
		for j < len(m.z) && m.z[j] {
			j++
		}
		out = append(out, ZoneRange{uint64(i), uint64(j)})
		i = j
	}
	if m.beyond {
		d := uint64(len(m.z))
		if n := len(out); n > 0 && out[n-1].End == d {
			out[n-1].End = NoEnd
		} else {
			out = append(out, ZoneRange{d, NoEnd})
		}
	}
	return out
}

// TestZoneSetModel drives random adds and removes — short writes, long
// ranges across chunks, open-ended tails, and dense phases that push chunks
// into bitmaps and back — and compares with the naive model after each.
func TestZoneSetModel(t *testing.T) {
	const domain = 3*chunkZones + 37
	for seed := range uint64(16) {
		rng := rand.New(rand.NewPCG(seed, 7))
		var s zoneSet
		m := &zoneModel{z: make([]bool, domain)}
		sawBitmap := false
		for step := range 300 {
			var a, b uint64
			switch k := rng.IntN(10); {
			case k < 4: // short write
				a = rng.Uint64N(domain)
				b = min(a+1+rng.Uint64N(16), domain)
			case k < 6: // long range, often across chunks
				a = rng.Uint64N(domain)
				b = min(a+1+rng.Uint64N(2*chunkZones), domain)
			case k < 7: // to the end
				a, b = rng.Uint64N(domain), NoEnd
			default: // dense burst of single zones in one chunk
				base := rng.Uint64N(3) * chunkZones
				for range 600 {
					z := base + 2*rng.Uint64N(chunkZones/2)
					s.add(z, z+1)
					m.set(z, z+1, true)
				}
				a = rng.Uint64N(domain)
				b = min(a+1+rng.Uint64N(64), domain)
			}
			add := rng.IntN(3) != 0
			if add {
				s.add(a, b)
			} else {
				s.remove(a, b)
			}
			m.set(a, b, add)
			for _, c := range s.chunks {
				sawBitmap = sawBitmap || c.bits != nil
			}
			// Comparing whole sets costs O(domain): every few steps.
			if step%6 == 5 {
				if got, want := s.ranges(), m.ranges(); !slices.Equal(got, want) {
					t.Fatalf("seed %d step %d (add=%v [%d,%d)): ranges differ\n got  %v\n want %v", seed, step, add, a, b, trim(got), trim(want))
				}
			}
			for range 20 {
				z := rng.Uint64N(domain + 10)
				want := m.beyond
				if z < domain {
					want = m.z[z]
				}
				if s.contains(z) != want {
					t.Fatalf("seed %d step %d: contains(%d) = %v, want %v", seed, step, z, !want, want)
				}
			}
			checkZoneSetInvariants(t, &s)
		}
		if seed == 0 && !sawBitmap {
			t.Errorf("seed 0 never used a bitmap chunk: the dense path is untested")
		}
	}
}

func trim(r []ZoneRange) []ZoneRange {
	if len(r) > 12 {
		return r[:12]
	}
	return r
}

func checkZoneSetInvariants(t *testing.T, s *zoneSet) {
	t.Helper()
	tail, hasTail := s.tailStart()
	for i, c := range s.chunks {
		if c.n == 0 || (!c.full() && c.n != 1) {
			t.Fatalf("chunk %d: n=%d full=%v", i, c.n, c.full())
		}
		if i > 0 && s.chunks[i-1].end() > c.key {
			t.Fatalf("chunks %d and %d overlap or are unsorted", i-1, i)
		}
		if i > 0 && c.full() && s.chunks[i-1].full() && s.chunks[i-1].end() == c.key {
			t.Fatalf("adjacent full chunks %d and %d not merged", i-1, i)
		}
		if c.bits != nil && c.bits.count == 0 || c.runs != nil && len(c.runs) == 0 {
			t.Fatalf("chunk %d is empty", i)
		}
		if hasTail && c.end()<<chunkBits > tail && !(c.key<<chunkBits < tail) {
			t.Fatalf("chunk %d lies in the tail", i)
		}
	}
}

// TestZoneSetHuge: ranges of terabytes cost a handful of entries.
func TestZoneSetHuge(t *testing.T) {
	var s zoneSet
	s.add(0, 1<<40) // 64 PiB of 64 KiB zones
	if len(s.chunks) != 1 {
		t.Fatalf("one range of 2^40 zones: %d chunks", len(s.chunks))
	}
	s.remove(1<<30+5, 1<<30+6)
	if got := s.ranges(); !slices.Equal(got, []ZoneRange{{0, 1<<30 + 5}, {1<<30 + 6, 1 << 40}}) {
		t.Fatalf("after punching one zone: %v", got)
	}
	if len(s.chunks) != 3 {
		t.Fatalf("punching one zone in a span: %d chunks, want 3", len(s.chunks))
	}
	s.add(1<<30+5, 1<<30+6)
	if len(s.chunks) != 1 {
		t.Fatalf("refilling the hole: %d chunks, want 1", len(s.chunks))
	}
	s.add(5, NoEnd)
	if got := s.ranges(); !slices.Equal(got, []ZoneRange{{0, NoEnd}}) {
		t.Fatalf("with a tail from 5: %v", got)
	}
	s.remove(3, 1<<50)
	if got := s.ranges(); !slices.Equal(got, []ZoneRange{{0, 3}, {1 << 50, NoEnd}}) {
		t.Fatalf("after removing [3, 2^50): %v", got)
	}
	if !s.covers(0, 3) || s.covers(0, 4) || !s.covers(1<<50, 1<<50+100) {
		t.Fatal("covers is wrong")
	}
}

// TestZoneSetSequentialFill: a 1 TiB file written sequentially in 1 MiB
// writes ends as a single entry.
func TestZoneSetSequentialFill(t *testing.T) {
	var s zoneSet
	const zones = 1 << 24 // 1 TiB of 64 KiB zones
	for z := uint64(0); z < zones; z += 16 {
		s.add(z, z+16)
	}
	if len(s.chunks) != 1 || !s.chunks[0].full() || s.finiteZones() != zones {
		t.Fatalf("1 TiB written sequentially: %d chunks, %d zones", len(s.chunks), s.finiteZones())
	}
}
