package resync

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"

	"github.com/zeebo/xxh3"
)

// String returns the hash in hexadecimal.
func (s Sum) String() string { return hex.EncodeToString(s[:]) }

// blockSum hashes one block.
func blockSum(b []byte) Sum { return Sum(xxh3.Hash128(b).Bytes()) }

// wholeSum is a file's hash: the hash of its block hashes in order.
func wholeSum(blocks []Sum) Sum {
	h := xxh3.New128()
	for i := range blocks {
		h.Write(blocks[i][:])
	}
	return Sum(h.Sum128().Bytes())
}

// wholeHasher accumulates block hashes without keeping them.
type wholeHasher struct{ h *xxh3.Hasher128 }

func newWholeHasher() wholeHasher { return wholeHasher{xxh3.New128()} }

func (w wholeHasher) reset()     { w.h.Reset() }
func (w wholeHasher) add(s Sum)  { w.h.Write(s[:]) }
func (w wholeHasher) whole() Sum { return Sum(w.h.Sum128().Bytes()) }
func (w wholeHasher) addBlock(b []byte) Sum {
	s := blockSum(b)
	w.add(s)
	return s
}

// HashReader hashes size bytes of r from offset 0 in blocks of blockSize:
// the block hashes and the whole hash. A reader that ends early yields the
// hashes of what it held and its length.
func HashReader(r io.ReaderAt, size, blockSize int64) (whole Sum, blocks []Sum, n int64, err error) {
	if blockSize <= 0 {
		return Sum{}, nil, 0, fmt.Errorf("hash: block size %d", blockSize)
	}
	buf := make([]byte, min(blockSize, max(size, 1)))
	w := newWholeHasher()
	for off := int64(0); off < size; {
		want := min(blockSize, size-off)
		got, rerr := readFull(r, buf[:want], off)
		if got > 0 {
			blocks = append(blocks, w.addBlock(buf[:got]))
			off += int64(got)
		}
		if rerr != nil {
			if errors.Is(rerr, io.EOF) {
				return w.whole(), blocks, off, nil
			}
			return Sum{}, nil, off, fmt.Errorf("hash: read at %d: %w", off, rerr)
		}
	}
	return w.whole(), blocks, size, nil
}

// readFull reads len(b) bytes at off unless the file ends first (io.EOF
// with the count read).
func readFull(r io.ReaderAt, b []byte, off int64) (int, error) {
	n := 0
	for n < len(b) {
		m, err := r.ReadAt(b[n:], off+int64(n))
		n += m
		if err != nil {
			if errors.Is(err, io.EOF) && n == len(b) {
				return n, nil
			}
			return n, err
		}
		if m == 0 {
			return n, io.ErrNoProgress
		}
	}
	return n, nil
}

// isZero reports whether b holds only zero bytes.
func isZero(b []byte) bool {
	// Compare word-sized chunks: a megabyte block is scanned in well under
	// a millisecond.
	for len(b) >= 8 {
		if b[0]|b[1]|b[2]|b[3]|b[4]|b[5]|b[6]|b[7] != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
