package replication

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// The workload writer is the test binary itself, started again in the
// primary's namespace with these variables set (like mirrorbed's
// service): kill -9 of the host kills it with the agent and the daemon.
const (
	writerDirEnv  = "HALO_REPL_WRITER_DIR"  // replicated directory to write into
	writerAcksEnv = "HALO_REPL_WRITER_ACKS" // acknowledgement log, outside the replicated directory
	writerSeedEnv = "HALO_REPL_WRITER_SEED"
	writerNameEnv = "HALO_REPL_WRITER_NAME" // file name prefix (two writers in one tree)
)

func init() {
	if dir := os.Getenv(writerDirEnv); dir != "" {
		seed, _ := strconv.ParseUint(os.Getenv(writerSeedEnv), 10, 64)
		if err := runWriter(dir, os.Getenv(writerAcksEnv), os.Getenv(writerNameEnv), seed); err != nil {
			fmt.Fprintln(os.Stderr, "writer:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
}

// An ack is one line of the acknowledgement log, written after the
// operation it describes returned from fsync:
//
//	rec <file> <offset> <length> <sha256>     bytes appended to file, fsync'd
//	ren <file> <length> <sha256>              file written, fsync'd, renamed into place, directory fsync'd
type ack struct {
	kind, file string
	off, n     int64
	sum        string
}

func (a ack) String() string {
	if a.kind == "ren" {
		return fmt.Sprintf("ren %s %d %s", a.file, a.n, a.sum)
	}
	return fmt.Sprintf("rec %s %d %d %s", a.file, a.off, a.n, a.sum)
}

// runWriter appends records to a few files and renames small files into
// place, fsyncing each and logging it as acknowledged, until killed. Every
// record is unique (it starts with its sequence number), so a byte range
// acknowledged once keeps its content: later records only append.
func runWriter(dir, acksPath, name string, seed uint64) error {
	if name == "" {
		name = "w"
	}
	acks, err := os.OpenFile(acksPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	type file struct {
		f    *os.File
		name string
		size int64
	}
	var files []*file
	open := func() error {
		fn := fmt.Sprintf("%s-%d-%d.dat", name, seed, len(files))
		f, err := os.OpenFile(filepath.Join(dir, fn), os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o644)
		if err != nil {
			return err
		}
		files = append(files, &file{f: f, name: fn})
		return nil
	}
	for range 4 {
		if err := open(); err != nil {
			return err
		}
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	for seq := 0; ; seq++ {
		var a ack
		if rng.IntN(10) == 0 {
			// Write a small file beside, fsync it, rename it into place,
			// fsync the directory.
			fn := fmt.Sprintf("%s-%d-r%d", name, seed, seq)
			data := payload(rng, seq, 1+rng.IntN(8<<10))
			tmp := filepath.Join(dir, fn+".part")
			if err := os.WriteFile(tmp, data, 0o644); err != nil {
				return err
			}
			f, err := os.OpenFile(tmp, os.O_WRONLY, 0)
			if err != nil {
				return err
			}
			if err := f.Sync(); err != nil {
				return err
			}
			f.Close()
			if err := os.Rename(tmp, filepath.Join(dir, fn)); err != nil {
				return err
			}
			if err := d.Sync(); err != nil {
				return err
			}
			a = ack{kind: "ren", file: fn, n: int64(len(data)), sum: sum(data)}
		} else {
			fl := files[rng.IntN(len(files))]
			if fl.size > 4<<20 {
				if err := open(); err != nil {
					return err
				}
				if err := d.Sync(); err != nil {
					return err
				}
				fl = files[len(files)-1]
			}
			data := payload(rng, seq, 64+rng.IntN(96<<10))
			if _, err := fl.f.Write(data); err != nil {
				return err
			}
			if err := fl.f.Sync(); err != nil {
				return err
			}
			a = ack{kind: "rec", file: fl.name, off: fl.size, n: int64(len(data)), sum: sum(data)}
			fl.size += int64(len(data))
		}
		if _, err := acks.WriteString(a.String() + "\n"); err != nil {
			return err
		}
	}
}

func payload(rng *rand.Rand, seq, n int) []byte {
	b := make([]byte, n)
	for i := 0; i < n; i += 8 {
		v := rng.Uint64()
		for k := 0; k < 8 && i+k < n; k++ {
			b[i+k] = byte(v >> (8 * k))
		}
	}
	copy(b, fmt.Sprintf("#%d:", seq))
	return b
}

func sum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// readAcks parses an acknowledgement log; a torn last line (the writer
// was killed while writing it) is not an acknowledgement.
func readAcks(path string) ([]ack, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []ack
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := sc.Text()
		f := strings.Fields(line)
		switch {
		case len(f) == 5 && f[0] == "rec" && len(f[4]) == 64:
			off, err1 := strconv.ParseInt(f[2], 10, 64)
			n, err2 := strconv.ParseInt(f[3], 10, 64)
			if err1 != nil || err2 != nil {
				return nil, fmt.Errorf("bad ack %q", line)
			}
			out = append(out, ack{kind: "rec", file: f[1], off: off, n: n, sum: f[4]})
		case len(f) == 4 && f[0] == "ren" && len(f[3]) == 64:
			n, err := strconv.ParseInt(f[2], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("bad ack %q", line)
			}
			out = append(out, ack{kind: "ren", file: f[1], n: n, sum: f[3]})
		case !strings.HasSuffix(string(data), "\n") && line == lastLine(data):
			// torn tail
		default:
			return nil, fmt.Errorf("bad ack %q", line)
		}
	}
	return out, sc.Err()
}

func lastLine(data []byte) string {
	s := strings.TrimRight(string(data), "\n")
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// checkAcks checks every acknowledged operation against dir and returns
// the problems found (nil: every acknowledged byte is there).
func checkAcks(dir string, acks []ack) []string {
	var bad []string
	files := map[string]*os.File{}
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	for _, a := range acks {
		f := files[a.file]
		if f == nil {
			var err error
			f, err = os.Open(filepath.Join(dir, a.file))
			if err != nil {
				bad = append(bad, fmt.Sprintf("%s: %v", a, err))
				continue
			}
			files[a.file] = f
		}
		b := make([]byte, a.n)
		if _, err := f.ReadAt(b, a.off); err != nil {
			bad = append(bad, fmt.Sprintf("%s: read: %v", a, err))
			continue
		}
		if got := sum(b); got != a.sum {
			bad = append(bad, fmt.Sprintf("%s: content differs (sha256 %s)", a, got))
		}
		if a.kind == "ren" {
			if st, err := f.Stat(); err == nil && st.Size() != a.n {
				bad = append(bad, fmt.Sprintf("%s: size %d", a, st.Size()))
			}
		}
	}
	return bad
}

// countLines counts the complete lines of a file (0 if it is missing).
func countLines(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	return bytes.Count(b, []byte{'\n'})
}

// waitLines waits until the file has at least n complete lines.
func waitLines(path string, n int, within time.Duration) bool {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if countLines(path) >= n {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}
