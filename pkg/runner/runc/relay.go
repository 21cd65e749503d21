package runc

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// relay carries a build's connections to the host services of
// Options.Forwards: for each, a listener that the runner opens inside the
// build's network namespace, on the port the build connects to, whose
// connections it copies to and from the host's loopback port.
//
// pasta could forward these itself (its -T), but it splices them through
// pipes, and Debian's pasta (0.0~git20230309) has been seen to stall such a
// forward for good near the end of a large upload (the last ~2 MB of a
// 1 GiB layer's push never reached the registry). pasta now carries only
// the build's traffic to the outside.
type relay struct {
	lns []net.Listener
	wg  sync.WaitGroup
	mu  sync.Mutex
	cs  map[net.Conn]struct{}
	// slots bounds the connections relayed at once: each holds two of the
	// server's file descriptors, and the build decides how many it opens.
	slots chan struct{}
}

// maxRelayed is how many connections one build has relayed at once; more
// are closed as they arrive (Kaniko pushes a few layers at a time).
const maxRelayed = 64

// startRelay opens the listeners of forwards in the namespace netns and
// starts serving them; stop ends them.
func startRelay(netns string, forwards []Forward) (*relay, error) {
	r := &relay{cs: map[net.Conn]struct{}{}, slots: make(chan struct{}, maxRelayed)}
	for _, f := range forwards {
		ln, err := listenIn(netns, "127.0.0.1:"+strconv.Itoa(f.Port))
		if err != nil {
			r.stop()
			return nil, fmt.Errorf("forwarding port %d: %w", f.Port, err)
		}
		r.serve(ln, f.HostPort)
		// ::1 too, where the namespace has IPv6.
		if ln6, err := listenIn(netns, "[::1]:"+strconv.Itoa(f.Port)); err == nil {
			r.serve(ln6, f.HostPort)
		}
	}
	return r, nil
}

// listenIn listens on addr inside the network namespace netns: the socket
// is created by a thread that joined the namespace, and stays in it.
func listenIn(netns, addr string) (ln net.Listener, err error) {
	err = inNetns(netns, func() error {
		ln, err = net.Listen("tcp", addr)
		return err
	})
	return ln, err
}

// inNetns runs f on a thread that joined the network namespace netns; the
// sockets f makes belong to that namespace.
func inNetns(netns string, f func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		self, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			done <- err
			return
		}
		defer self.Close()
		target, err := os.Open(netns)
		if err != nil {
			runtime.UnlockOSThread()
			done <- err
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("setns: %w", err)
			return
		}
		err = f()
		if unix.Setns(int(self.Fd()), unix.CLONE_NEWNET) == nil {
			// Back in the host's namespace: the thread may serve others.
			runtime.UnlockOSThread()
		} // else the thread stays locked and ends with this goroutine.
		done <- err
	}()
	return <-done
}

func (r *relay) serve(ln net.Listener, hostPort int) {
	r.lns = append(r.lns, ln)
	target := "127.0.0.1:" + strconv.Itoa(hostPort)
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return // closed by stop
			}
			select {
			case r.slots <- struct{}{}:
			default:
				c.Close() // over maxRelayed
				continue
			}
			r.wg.Add(1)
			go func() {
				defer r.wg.Done()
				defer func() { <-r.slots }()
				r.pipe(c, target)
			}()
		}
	}()
}

// pipe copies between the build's connection c and a connection to the
// host's target, each way until its end, passing each end on as a
// half-close.
func (r *relay) pipe(c net.Conn, target string) {
	defer c.Close()
	h, err := net.Dial("tcp", target)
	if err != nil {
		return
	}
	defer h.Close()
	if !r.track(c, h) {
		return
	}
	defer r.untrack(c, h)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		io.Copy(h, c)
		closeWrite(h)
	}()
	io.Copy(c, h)
	closeWrite(c)
	wg.Wait()
}

func closeWrite(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.CloseWrite()
	}
}

// track records the connections of one relayed connection, so that stop
// closes them; false once stop has begun.
func (r *relay) track(cs ...net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cs == nil {
		return false
	}
	for _, c := range cs {
		r.cs[c] = struct{}{}
	}
	return true
}

func (r *relay) untrack(cs ...net.Conn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range cs {
		delete(r.cs, c)
	}
}

// stop closes the listeners and every relayed connection, and waits for
// the relay's goroutines.
func (r *relay) stop() error {
	var errs []error
	for _, ln := range r.lns {
		if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	r.mu.Lock()
	for c := range r.cs {
		c.Close()
	}
	r.cs = nil
	r.mu.Unlock()
	r.wg.Wait()
	return errors.Join(errs...)
}
