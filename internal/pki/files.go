package pki

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
)

// ClusterKeySize is the size of a generated cluster key; the heartbeat
// codec refuses shorter keys.
const ClusterKeySize = 32

// Modes of the files this package writes.
const (
	SecretMode    os.FileMode = 0o600
	PublicMode    os.FileMode = 0o644
	DirectoryMode os.FileMode = 0o700
)

// NewClusterKey returns ClusterKeySize random bytes.
func NewClusterKey() ([]byte, error) {
	k := make([]byte, ClusterKeySize)
	if _, err := rand.Read(k); err != nil {
		return nil, fmt.Errorf("generate cluster key: %w", err)
	}
	return k, nil
}

// EncodeClusterKey is the content of a cluster key file: hex and a newline,
// so the file survives copy and paste and editors.
func EncodeClusterKey(key []byte) []byte {
	return []byte(hex.EncodeToString(key) + "\n")
}

// ParseClusterKey decodes a cluster key file's content.
func ParseClusterKey(data []byte) ([]byte, error) {
	s := bytes.TrimSpace(data)
	key := make([]byte, hex.DecodedLen(len(s)))
	if _, err := hex.Decode(key, s); err != nil {
		return nil, fmt.Errorf("parse cluster key: not hexadecimal: %w", err)
	}
	if len(key) < ClusterKeySize {
		return nil, fmt.Errorf("parse cluster key: %d bytes, need at least %d", len(key), ClusterKeySize)
	}
	return key, nil
}

// LoadClusterKey reads a cluster key file, which must not be accessible by
// group or others.
func LoadClusterKey(path string) ([]byte, error) {
	data, err := readSecret(path)
	if err != nil {
		return nil, fmt.Errorf("load cluster key: %w", err)
	}
	key, err := ParseClusterKey(data)
	if err != nil {
		return nil, fmt.Errorf("load cluster key from %s: %w", path, err)
	}
	return key, nil
}

// readSecret reads a private file, refusing one that group or others can
// access, as ssh does: a leaked key is not noticed until it is used.
func readSecret(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("%s is accessible by group or others (mode %04o); run chmod 600 %s", path, perm, path)
	}
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(f); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return buf.Bytes(), nil
}

// writeFileAtomic writes data to path with mode through a temporary file
// in the same directory, so a reader (or a crash) sees the old content or
// the new, never a part.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmpName := tmp.Name()
	defer os.Remove(tmpName) // after a successful rename this fails harmlessly
	// CreateTemp makes the file 0600; chmod before writing, never after,
	// so a secret is never readable by others even for a moment.
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmpName, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}
