package server

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// LockFile is the file in the data dir that one server at a time holds an
// exclusive lock (flock) on; it contains the holder's pid.
const LockFile = "slipway.lock"

// ErrDataDirLocked is returned by Listen when another server holds the data
// dir's lock.
var ErrDataDirLocked = errors.New("the data dir is in use by another server")

// dataDirLock is the held lock of a data dir, released by Close (and by the
// kernel when the process ends, however it ends).
type dataDirLock struct{ f *os.File }

// lockDataDir takes the data dir's exclusive lock without waiting; when
// another process (or another server in this one) holds it, the error names
// the holder's pid.
func lockDataDir(dir string) (*dataDirLock, error) {
	path := filepath.Join(dir, LockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("data dir lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			holder := "unknown"
			if b, err := os.ReadFile(path); err == nil {
				if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
					holder = strconv.Itoa(pid)
				}
			}
			return nil, fmt.Errorf("%w: %s is locked by the server with pid %s; stop it or use another --data", ErrDataDirLocked, dir, holder)
		}
		return nil, fmt.Errorf("data dir lock: %w", err)
	}
	if err := f.Truncate(0); err == nil {
		_, err = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &dataDirLock{f: f}, nil
}

// Close releases the lock.
func (l *dataDirLock) Close() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}
