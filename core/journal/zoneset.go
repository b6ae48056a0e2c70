package journal

import (
	"math/bits"
	"slices"
)

// NoEnd as the End of a ZoneRange means "to the end of the file, whatever
// its size": a truncate or an extension changes everything past a point.
const NoEnd = ^uint64(0)

// ZoneRange is the half-open range [Start, End) of zone numbers (zone z
// covers bytes [z*ZoneSize, (z+1)*ZoneSize)).
type ZoneRange struct {
	Start, End uint64
}

// maxZone bounds finite zone numbers. File offsets are below 2^63 and zones
// are at least 512 bytes, so real zones stay below 2^54; the margin keeps the
// chunk arithmetic free of overflow and lets NoEnd stand for infinity.
const maxZone = 1 << 56

// A zoneSet is the set of dirty zones of one file, built like a roaring
// bitmap so that both a few scattered zones and terabytes of them stay small:
//
//   - zones are grouped in chunks of 2^16 consecutive zones (4 GiB of file
//     with 64 KiB zones), kept in a slice sorted by chunk number;
//   - a partial chunk holds sorted (first, last) pairs of uint16 — 4 bytes a
//     run — until that costs more than a bitmap (8 KiB), then a bitmap;
//   - runs of entirely dirty chunks collapse into one entry (key, n);
//   - everything from a zone to the end of the file (a truncate, a new file)
//     is the tail: O(1) whatever the file size.
//
// Invariant: every zone held in chunks is below the tail's start; entries
// are sorted, disjoint, and none is empty.
type zoneSet struct {
	tail   uint64 // 1 + first zone of the dirty tail; 0: no tail
	chunks []zchunk
}

const (
	chunkBits   = 16
	chunkZones  = 1 << chunkBits
	chunkMask   = chunkZones - 1
	bitmapWords = chunkZones / 64
	// maxRunPairs is where a chunk's runs (4 bytes each) outgrow a bitmap.
	maxRunPairs = bitmapWords * 2
)

// zchunk covers chunks [key, key+n). n > 1 only for entirely dirty spans.
// An entry is full when it has neither runs nor bits.
type zchunk struct {
	key  uint64
	n    uint64
	runs []uint16 // (first, last) pairs, inclusive, sorted, neither overlapping nor adjacent
	bits *bitmap
}

type bitmap struct {
	w     [bitmapWords]uint64
	count uint32
}

func (c *zchunk) full() bool  { return c.runs == nil && c.bits == nil }
func (c *zchunk) end() uint64 { return c.key + c.n }

func (s *zoneSet) tailStart() (uint64, bool) {
	if s.tail == 0 {
		return 0, false
	}
	return s.tail - 1, true
}

func (s *zoneSet) setTail(z uint64) { s.tail = z + 1 }

func (s *zoneSet) empty() bool { return s.tail == 0 && len(s.chunks) == 0 }

func (s *zoneSet) reset() { *s = zoneSet{} }

// add marks zones [a, b) dirty; b == NoEnd marks everything from a.
func (s *zoneSet) add(a, b uint64) {
	if a >= b {
		return
	}
	if t, ok := s.tailStart(); ok {
		if a >= t {
			return
		}
		if b >= t {
			b = NoEnd
		}
	}
	if b == NoEnd {
		s.removeChunks(a, maxZone)
		s.setTail(a)
		return
	}
	s.addChunks(a, b)
}

// addChunks adds a finite range below the tail.
func (s *zoneSet) addChunks(a, b uint64) {
	ka, kb := a>>chunkBits, (b-1)>>chunkBits
	fa, lb := uint16(a&chunkMask), uint16((b-1)&chunkMask)
	if ka == kb {
		s.addInChunk(ka, fa, lb)
		return
	}
	fullFrom, fullTo := ka, kb+1
	if fa != 0 {
		s.addInChunk(ka, fa, chunkMask)
		fullFrom++
	}
	if lb != chunkMask {
		s.addInChunk(kb, 0, lb)
		fullTo--
	}
	if fullFrom < fullTo {
		s.addFull(fullFrom, fullTo)
	}
}

// find returns the index of the entry covering chunk k, or where one would
// be inserted.
func (s *zoneSet) find(k uint64) (int, bool) {
	i, _ := slices.BinarySearchFunc(s.chunks, k, func(c zchunk, k uint64) int {
		switch {
		case c.end() <= k:
			return -1
		case c.key > k:
			return 1
		}
		return 0
	})
	return i, i < len(s.chunks) && s.chunks[i].key <= k && k < s.chunks[i].end()
}

func (s *zoneSet) addInChunk(k uint64, first, last uint16) {
	if first == 0 && last == chunkMask {
		s.addFull(k, k+1)
		return
	}
	i, ok := s.find(k)
	if !ok {
		s.chunks = slices.Insert(s.chunks, i, zchunk{key: k, n: 1, runs: []uint16{first, last}})
		return
	}
	c := &s.chunks[i]
	if c.full() {
		return
	}
	if c.bits != nil {
		c.bits.set(first, last)
	} else {
		c.runs = addRun(c.runs, first, last)
		if len(c.runs) > 2*maxRunPairs {
			c.bits = runsToBitmap(c.runs)
			c.runs = nil
		}
	}
	if c.isFullChunk() {
		c.runs, c.bits = nil, nil
		s.mergeFull(i)
	}
}

func (c *zchunk) isFullChunk() bool {
	if c.bits != nil {
		return c.bits.count == chunkZones
	}
	return len(c.runs) == 2 && c.runs[0] == 0 && c.runs[1] == chunkMask
}

// addFull makes chunks [f, t) entirely dirty, absorbing what they held.
func (s *zoneSet) addFull(f, t uint64) {
	i, _ := s.find(f)
	j := i
	for j < len(s.chunks) && s.chunks[j].key < t {
		j++
	}
	key, end := f, t
	if i < j && s.chunks[i].key < key {
		key = s.chunks[i].key // only a full span can start before f and reach it
	}
	if i < j && s.chunks[j-1].end() > end {
		end = s.chunks[j-1].end()
	}
	s.chunks = slices.Replace(s.chunks, i, j, zchunk{key: key, n: end - key})
	s.mergeFull(i)
}

// mergeFull joins the full entry i with full neighbours it touches.
func (s *zoneSet) mergeFull(i int) {
	if i+1 < len(s.chunks) && s.chunks[i+1].full() && s.chunks[i].end() == s.chunks[i+1].key {
		s.chunks[i].n += s.chunks[i+1].n
		s.chunks = slices.Delete(s.chunks, i+1, i+2)
	}
	if i > 0 && s.chunks[i-1].full() && s.chunks[i-1].end() == s.chunks[i].key {
		s.chunks[i-1].n += s.chunks[i].n
		s.chunks = slices.Delete(s.chunks, i, i+1)
	}
}

// remove marks zones [a, b) clean; b == NoEnd cleans everything from a.
func (s *zoneSet) remove(a, b uint64) {
	if a >= b {
		return
	}
	if t, ok := s.tailStart(); ok && b > t {
		s.tail = 0
		if b != NoEnd {
			s.setTail(b)
		}
		if t < a {
			s.addChunks(t, a)
		}
	}
	if b == NoEnd || b > maxZone {
		b = maxZone
	}
	if a < b {
		s.removeChunks(a, b)
	}
}

// split makes chunk k start its own entry if it lies inside a full span.
func (s *zoneSet) split(k uint64) {
	i, ok := s.find(k)
	if !ok || s.chunks[i].key == k {
		return
	}
	c := s.chunks[i]
	left := zchunk{key: c.key, n: k - c.key}
	right := zchunk{key: k, n: c.end() - k}
	s.chunks = slices.Replace(s.chunks, i, i+1, left, right)
}

// removeChunks cleans the finite range [a, b) of the chunks.
func (s *zoneSet) removeChunks(a, b uint64) {
	if len(s.chunks) == 0 {
		return
	}
	ka, kb := a>>chunkBits, (b-1)>>chunkBits
	// Cut full spans so that chunks ka and kb stand alone; what lies between
	// goes entirely.
	for _, k := range []uint64{ka, ka + 1, kb, kb + 1} {
		s.split(k)
	}
	i, _ := s.find(ka)
	for i < len(s.chunks) && s.chunks[i].key <= kb {
		c := &s.chunks[i]
		first, last := uint16(0), uint16(chunkMask)
		if c.key == ka {
			first = uint16(a & chunkMask)
		}
		if c.key == kb {
			last = uint16((b - 1) & chunkMask)
		}
		if (c.key != ka && c.key != kb) || (first == 0 && last == chunkMask) {
			s.chunks = slices.Delete(s.chunks, i, i+1)
			continue
		}
		if c.full() {
			c.runs = []uint16{0, chunkMask}
		}
		if c.bits != nil {
			c.bits.clear(first, last)
			if c.bits.count == 0 {
				s.chunks = slices.Delete(s.chunks, i, i+1)
				continue
			}
			if r := c.bits.runs(); len(r) <= maxRunPairs {
				c.runs, c.bits = r, nil // hysteresis: back to runs at half the limit
			}
		} else {
			c.runs = removeRun(c.runs, first, last)
			if len(c.runs) == 0 {
				s.chunks = slices.Delete(s.chunks, i, i+1)
				continue
			}
		}
		i++
	}
}

// contains reports whether zone z is dirty.
func (s *zoneSet) contains(z uint64) bool {
	if t, ok := s.tailStart(); ok && z >= t {
		return true
	}
	i, ok := s.find(z >> chunkBits)
	if !ok {
		return false
	}
	c := &s.chunks[i]
	off := uint16(z & chunkMask)
	switch {
	case c.full():
		return true
	case c.bits != nil:
		return c.bits.w[off/64]&(1<<(off%64)) != 0
	}
	return runsContain(c.runs, off)
}

// runsContain reports whether v lies in one of the sorted inclusive pairs.
func runsContain(r []uint16, v uint16) bool {
	lo, hi := 0, len(r)/2
	for lo < hi {
		m := (lo + hi) / 2
		switch {
		case r[2*m+1] < v:
			lo = m + 1
		case r[2*m] > v:
			hi = m
		default:
			return true
		}
	}
	return false
}

// covers reports whether every zone of [a, b) is dirty (b finite). Writes
// span a few zones, which are looked up one by one; longer ranges walk the
// set.
func (s *zoneSet) covers(a, b uint64) bool {
	if b-a <= 64 {
		for z := a; z < b; z++ {
			if !s.contains(z) {
				return false
			}
		}
		return true
	}
	covered := a
	s.forEach(func(r ZoneRange) bool {
		if r.End <= covered {
			return true
		}
		if r.Start > covered {
			return false
		}
		covered = r.End
		return covered < b
	})
	return covered >= b
}

// forEach calls fn with the dirty ranges in increasing order, adjacent ranges
// merged; the tail comes last with End == NoEnd. fn returns false to stop.
func (s *zoneSet) forEach(fn func(ZoneRange) bool) {
	var cur ZoneRange
	have := false
	emit := func(r ZoneRange) bool {
		if have && cur.End == r.Start {
			cur.End = r.End
			return true
		}
		if have && !fn(cur) {
			return false
		}
		cur, have = r, true
		return true
	}
	for i := range s.chunks {
		c := &s.chunks[i]
		base := c.key << chunkBits
		switch {
		case c.full():
			if !emit(ZoneRange{base, c.end() << chunkBits}) {
				return
			}
		case c.bits != nil:
			r := c.bits.runs()
			for j := 0; j < len(r); j += 2 {
				if !emit(ZoneRange{base + uint64(r[j]), base + uint64(r[j+1]) + 1}) {
					return
				}
			}
		default:
			for j := 0; j < len(c.runs); j += 2 {
				if !emit(ZoneRange{base + uint64(c.runs[j]), base + uint64(c.runs[j+1]) + 1}) {
					return
				}
			}
		}
	}
	if t, ok := s.tailStart(); ok {
		if !emit(ZoneRange{t, NoEnd}) {
			return
		}
	}
	if have {
		fn(cur)
	}
}

// ranges returns the dirty ranges (see forEach).
func (s *zoneSet) ranges() []ZoneRange {
	var out []ZoneRange
	s.forEach(func(r ZoneRange) bool { out = append(out, r); return true })
	return out
}

// finiteZones counts the dirty zones below the tail.
func (s *zoneSet) finiteZones() uint64 {
	var n uint64
	for i := range s.chunks {
		c := &s.chunks[i]
		switch {
		case c.full():
			n += c.n << chunkBits
		case c.bits != nil:
			n += uint64(c.bits.count)
		default:
			for j := 0; j < len(c.runs); j += 2 {
				n += uint64(c.runs[j+1]-c.runs[j]) + 1
			}
		}
	}
	return n
}

func (s *zoneSet) clone() zoneSet {
	c := zoneSet{tail: s.tail, chunks: slices.Clone(s.chunks)}
	for i := range c.chunks {
		ch := &c.chunks[i]
		ch.runs = slices.Clone(ch.runs)
		if ch.bits != nil {
			b := *ch.bits
			ch.bits = &b
		}
	}
	return c
}

// addRun inserts the inclusive run [f, l] into sorted pairs, merging runs it
// overlaps or touches.
func addRun(r []uint16, f, l uint16) []uint16 {
	// i: first pair whose last >= f-1 (could merge); j: first pair whose
	// first > l+1 (cannot).
	n := len(r) / 2
	i := 0
	for lo, hi := 0, n; lo < hi; {
		m := (lo + hi) / 2
		if uint32(r[2*m+1])+1 < uint32(f) {
			lo = m + 1
		} else {
			hi = m
		}
		i = lo
	}
	j := i
	for j < n && uint32(r[2*j]) <= uint32(l)+1 {
		j++
	}
	if i < j {
		f = min(f, r[2*i])
		l = max(l, r[2*j-1])
	}
	return slices.Replace(r, 2*i, 2*j, f, l)
}

// removeRun removes the inclusive run [f, l] from sorted pairs.
func removeRun(r []uint16, f, l uint16) []uint16 {
	out := make([]uint16, 0, len(r)+2)
	for k := 0; k < len(r); k += 2 {
		a, b := r[k], r[k+1]
		if b < f || a > l {
			out = append(out, a, b)
			continue
		}
		if a < f {
			out = append(out, a, f-1)
		}
		if b > l {
			out = append(out, l+1, b)
		}
	}
	return out
}

func runsToBitmap(r []uint16) *bitmap {
	b := &bitmap{}
	for k := 0; k < len(r); k += 2 {
		b.set(r[k], r[k+1])
	}
	return b
}

// set marks [f, l] and keeps count exact.
func (b *bitmap) set(f, l uint16) {
	b.apply(f, l, func(w *uint64, mask uint64) {
		b.count += uint32(bits.OnesCount64(mask &^ *w))
		*w |= mask
	})
}

func (b *bitmap) clear(f, l uint16) {
	b.apply(f, l, func(w *uint64, mask uint64) {
		b.count -= uint32(bits.OnesCount64(mask & *w))
		*w &^= mask
	})
}

func (b *bitmap) apply(f, l uint16, op func(w *uint64, mask uint64)) {
	for i := int(f) / 64; i <= int(l)/64; i++ {
		lo, hi := 0, 63
		if i == int(f)/64 {
			lo = int(f) % 64
		}
		if i == int(l)/64 {
			hi = int(l) % 64
		}
		mask := (^uint64(0) >> (63 - hi)) &^ (1<<lo - 1)
		op(&b.w[i], mask)
	}
}

// runs returns the bitmap as inclusive pairs.
func (b *bitmap) runs() []uint16 {
	var out []uint16
	inRun := false
	for i, word := range b.w {
		base := i * 64
		for pos := 0; pos < 64; {
			x := word
			if inRun {
				x = ^word // inside a run, look for the next clean zone
			}
			x &^= 1<<pos - 1
			if x == 0 {
				break
			}
			tz := bits.TrailingZeros64(x)
			if inRun {
				out = append(out, uint16(base+tz-1))
			} else {
				out = append(out, uint16(base+tz))
			}
			inRun = !inRun
			pos = tz
		}
	}
	if inRun {
		out = append(out, chunkMask)
	}
	return out
}
