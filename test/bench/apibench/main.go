// Command apibench measures what Slipway's API costs against what the same
// HTTP stack can do (`make bench-api`). It starts the real server
// (bin/slipway serve on a temporary data dir, seeded through the API with a
// workspace of 100 images) and a baseline: a few lines of net/http that
// answer the same requests with the bytes and headers captured from the real
// server. Each server is pinned to one core with taskset where it exists and
// loaded in turn by the same client from the other core, in interleaved
// pairs (baseline first on even rounds, real first on odd ones). It prints,
// per endpoint, the median over the pairs of the real server's requests per
// CPU-second (its utime+stime from /proc/PID/stat) divided by the
// baseline's, and a create's p99 under 200 concurrent clients divided by its
// p99 under 10. Figures are ratios from one session; nothing is asserted.
//
// It uses the standard library alone, so the service's go.mod stays as it is.
package main

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "baseline" {
		if err := baseline(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "apibench baseline:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "apibench:", err)
		os.Exit(1)
	}
}

type options struct {
	slipway   string
	rounds    int
	duration  time.Duration
	conns     int
	images    int
	creates   time.Duration
	load      float64
	keep      bool
	smoke     bool
	serverCPU string
	clientCPU string
	profile   string
	serveArgs []string
}

func run(args []string) error {
	var o options
	fs := flag.NewFlagSet("apibench", flag.ContinueOnError)
	fs.StringVar(&o.slipway, "slipway", "bin/slipway", "the slipway binary to measure")
	fs.IntVar(&o.rounds, "rounds", 5, "interleaved pairs per figure")
	fs.DurationVar(&o.duration, "duration", 2*time.Second, "load time of one server in one pair")
	fs.IntVar(&o.conns, "conns", 8, "concurrent connections of the throughput client")
	fs.IntVar(&o.images, "images", 100, "images in the workspace (the list is one page of them)")
	fs.DurationVar(&o.creates, "create-duration", 3*time.Second, "load time of one create run")
	fs.Float64Var(&o.load, "create-load", 0.5, "the creates' offered rate, as a fraction of the measured create capacity")
	fs.BoolVar(&o.keep, "keep", false, "keep the temporary data dir")
	fs.BoolVar(&o.smoke, "smoke", false, "one short round of everything: checks the harness runs, its figures mean nothing")
	fs.StringVar(&o.serverCPU, "server-cpu", "0", "the core the servers are pinned to")
	fs.StringVar(&o.clientCPU, "client-cpu", "1", "the core the client runs on")
	fs.StringVar(&o.profile, "profile", "", "also write CPU profiles of the real server under each load to this `DIR` (through --pprof-addr)")
	fs.Func("serve-arg", "one more argument of the real server's serve command, e.g. -serve-arg=--store=firestore (repeatable)", func(v string) error {
		o.serveArgs = append(o.serveArgs, v)
		return nil
	})
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.smoke {
		o.rounds, o.duration, o.creates, o.images = 1, 200*time.Millisecond, 300*time.Millisecond, 10
	}
	pin := pinning(o)
	if pin && os.Getenv("APIBENCH_PINNED") == "" {
		// Re-run the client on its own core; the runtime sizes GOMAXPROCS
		// from the affinity.
		self, err := os.Executable()
		if err != nil {
			return err
		}
		cmd := exec.Command("taskset", append([]string{"-c", o.clientCPU, self}, args...)...)
		cmd.Stdout, cmd.Stderr, cmd.Env = os.Stdout, os.Stderr, append(os.Environ(), "APIBENCH_PINNED=1")
		return cmd.Run()
	}
	if !pin {
		fmt.Println("note: taskset or a second core is missing: the servers and the client are not pinned")
	}
	slipway, err := filepath.Abs(o.slipway)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "apibench-")
	if err != nil {
		return err
	}
	if o.keep {
		fmt.Println("data in", dir)
	} else {
		defer os.RemoveAll(dir)
	}

	pprofAddr := ""
	if o.profile != "" {
		if pprofAddr, err = freeAddr(); err != nil {
			return err
		}
		if err := os.MkdirAll(o.profile, 0o755); err != nil {
			return err
		}
	}
	real, err := startReal(slipway, filepath.Join(dir, "data"), pin, o.serverCPU, pprofAddr, o.serveArgs)
	if err != nil {
		return err
	}
	defer real.stop()
	fix, err := seed(slipway, real, filepath.Join(dir, "data"), o.images)
	if err != nil {
		return err
	}
	capFile := filepath.Join(dir, "responses.json")
	if err := capture(real.url, fix, capFile); err != nil {
		return err
	}
	base, err := startBaseline(capFile, pin, o.serverCPU)
	if err != nil {
		return err
	}
	defer base.stop()
	if err := sameAnswers(real.url, base.url, fix); err != nil {
		return fmt.Errorf("the baseline does not answer as the real server does: %w", err)
	}

	fmt.Printf("apibench: %d rounds, %s per server per round, %d connections, GOMAXPROCS of the client %d\n",
		o.rounds, o.duration, o.conns, runtime.GOMAXPROCS(0))
	for _, ep := range []struct{ name, path, file string }{
		{fmt.Sprintf("list %d images", o.images), fix.listPath, "list.prof"},
		{"get one image", fix.getPath, "get.prof"},
	} {
		if o.profile != "" {
			if err := profile(real, pprofAddr, ep.path, fix.auth, o.conns, 4*o.duration, filepath.Join(o.profile, ep.file)); err != nil {
				return err
			}
		}
		var ratios []float64
		for r := range o.rounds {
			order := []*server{base, real}
			if r%2 == 1 {
				order = []*server{real, base}
			}
			got := map[*server]result{}
			for _, s := range order {
				res, err := throughput(s, ep.path, fix.auth, o.conns, o.duration)
				if err != nil {
					return fmt.Errorf("%s on the %s server: %w", ep.name, s.name, err)
				}
				got[s] = res
			}
			ratio := got[real].perCPU() / got[base].perCPU()
			ratios = append(ratios, ratio)
			fmt.Printf("  %-16s round %d: real %8.0f req/CPU-s (%5.0f req/s, CPU %3.0f%%)  baseline %8.0f req/CPU-s (%5.0f req/s, CPU %3.0f%%)  ratio %.3f\n",
				ep.name, r+1, got[real].perCPU(), got[real].perSecond(), 100*got[real].cpu/got[real].wall.Seconds(),
				got[base].perCPU(), got[base].perSecond(), 100*got[base].cpu/got[base].wall.Seconds(), ratio)
		}
		fmt.Printf("RATIO %s: %.3f of the baseline per CPU-second (median of %d pairs)\n", ep.name, median(ratios), len(ratios))
	}

	// Creates: the same offered rate under 10 and under 200 clients.
	capacity, err := createCapacity(real, fix, o.duration)
	if err != nil {
		return err
	}
	rate := o.load * capacity
	fmt.Printf("  creates: capacity %.0f/s with 10 clients back to back; offered %.0f/s (%.0f%%) under both client counts\n", capacity, rate, 100*o.load)
	var ratios []float64
	for r := range o.rounds {
		counts := []int{10, 200}
		if r%2 == 1 {
			counts = []int{200, 10}
		}
		p99 := map[int]time.Duration{}
		p50 := map[int]time.Duration{}
		for _, n := range counts {
			lat, err := creates(real, fix, n, rate, o.creates)
			if err != nil {
				return fmt.Errorf("creates with %d clients: %w", n, err)
			}
			p50[n], p99[n] = percentile(lat, 0.50), percentile(lat, 0.99)
			fmt.Printf("  create, %3d clients, round %d: %5d creates, p50 %7.2f ms, p99 %7.2f ms\n", n, r+1, len(lat), ms(p50[n]), ms(p99[n]))
		}
		ratios = append(ratios, float64(p99[200])/float64(p99[10]))
	}
	fmt.Printf("RATIO create p99, 200 vs 10 clients: %.2f (median of %d pairs)\n", median(ratios), len(ratios))
	return nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// pinning reports whether taskset exists and the chosen cores are there.
func pinning(o options) bool {
	if os.Getenv("APIBENCH_PINNED") != "" {
		return true // this is the re-run on the client's core
	}
	if _, err := exec.LookPath("taskset"); err != nil {
		return false
	}
	return runtime.NumCPU() >= 2 && o.serverCPU != o.clientCPU
}

// server is a process serving HTTP on url.
type server struct {
	name string
	url  string
	cmd  *exec.Cmd
}

func (s *server) stop() {
	if s.cmd.Process != nil {
		s.cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { s.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			s.cmd.Process.Kill()
			<-done
		}
	}
}

// cpu is the process's user and system time so far, in seconds.
func (s *server) cpu() (float64, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", s.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces: the fields start after its ')'.
	i := bytes.LastIndexByte(raw, ')')
	f := strings.Fields(string(raw[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	ut, err1 := strconv.ParseFloat(f[11], 64)
	st, err2 := strconv.ParseFloat(f[12], 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return (ut + st) / clockTicks(), nil
}

var ticks = sync.OnceValue(func() float64 {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if v, perr := strconv.ParseFloat(strings.TrimSpace(string(out)), 64); err == nil && perr == nil && v > 0 {
		return v
	}
	return 100
})

func clockTicks() float64 { return ticks() }

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// launch starts argv, on core cpu when pin, and waits until url+ready
// answers 200.
func launch(name string, argv []string, pin bool, cpu, url, ready string, stderr io.Writer) (*server, error) {
	if pin {
		argv = append([]string{"taskset", "-c", cpu}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &server{name: name, url: url, cmd: cmd}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		res, err := http.Get(url + ready)
		if err == nil {
			res.Body.Close()
			if res.StatusCode == 200 {
				return s, nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.stop()
	return nil, fmt.Errorf("the %s server did not get ready within a minute", name)
}

func startReal(slipway, data string, pin bool, cpu, pprofAddr string, extra []string) (*server, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	// The server's log goes beside its data dir (kept with --keep).
	log, err := os.Create(data + ".log")
	if err != nil {
		return nil, err
	}
	argv := []string{slipway, "serve", "--addr", addr, "--data", data, "--log-level", "warn", "--drain-delay", "0s"}
	if pprofAddr != "" {
		argv = append(argv, "--pprof-addr", pprofAddr)
	}
	argv = append(argv, extra...)
	return launch("real", argv, pin, cpu, "http://"+addr, "/health/readiness", log)
}

func startBaseline(responses string, pin bool, cpu string) (*server, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	return launch("baseline", []string{self, "baseline", "--responses", responses, "--addr", addr},
		pin, cpu, "http://"+addr, "/ready", os.Stderr)
}

// fixture is what seeding made: a token and the paths to load.
type fixture struct {
	auth     string
	ws       string
	listPath string
	getPath  string
	created  atomic.Int64
}

func seed(slipway string, s *server, data string, images int) (*fixture, error) {
	out, err := exec.Command(slipway, "token", "alice", "--data", data).Output()
	if err != nil {
		return nil, fmt.Errorf("slipway token: %w", err)
	}
	f := &fixture{auth: "Bearer " + strings.TrimSpace(string(out)), ws: "ws1"}
	if out, err := exec.Command(slipway, "workspace", f.ws, "--owner", "alice", "--member", "bob", "--server", s.url, "--data", data).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("slipway workspace: %v\n%s", err, out)
	}
	var first string
	for i := range images {
		id, err := createOne(http.DefaultClient, s.url, f, fmt.Sprintf("bench/image-%06d", i))
		if err != nil {
			return nil, err
		}
		if i == images/2 || first == "" {
			first = id
		}
	}
	f.listPath = fmt.Sprintf("/api/v1/workspaces/%s/images?limit=%d", f.ws, images)
	f.getPath = "/api/v1/images/" + first
	return f, nil
}

// imageBody is a create's body: a local context with a typical Dockerfile.
func imageBody(name string) []byte {
	body, _ := json.Marshal(map[string]any{
		"name": name, "description": "An image for the benchmark: a Python service with its dependencies.",
		"context": map[string]any{"type": "local", "dockerfile": "FROM python:3.12-slim\nWORKDIR /app\nCOPY requirements.txt .\nRUN pip install --no-cache-dir -r requirements.txt\nCOPY . .\nCMD [\"python\", \"-m\", \"app\"]\n"},
	})
	return body
}

func createOne(c *http.Client, url string, f *fixture, name string) (string, error) {
	req, _ := http.NewRequest("POST", url+"/api/v1/workspaces/"+f.ws+"/images", bytes.NewReader(imageBody(name)))
	req.Header.Set("Authorization", f.auth)
	req.Header.Set("Content-Type", "application/json")
	res, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusCreated {
		return "", fmt.Errorf("create %s: %d %s", name, res.StatusCode, body)
	}
	var img struct{ ID string }
	if err := json.Unmarshal(body, &img); err != nil {
		return "", err
	}
	return img.ID, nil
}

// response is one captured answer the baseline replays.
type response struct {
	Status int         `json:"status"`
	Header http.Header `json:"header"`
	Body   []byte      `json:"body"`
}

// capture records the real server's answers to the loaded requests.
func capture(url string, f *fixture, file string) error {
	got := map[string]response{}
	for _, p := range []string{f.listPath, f.getPath} {
		res, err := get(http.DefaultClient, url+p, f.auth)
		if err != nil {
			return err
		}
		if res.Status != 200 {
			return fmt.Errorf("GET %s: %d %s", p, res.Status, res.Body)
		}
		got[p] = res
	}
	raw, err := json.Marshal(got)
	if err != nil {
		return err
	}
	return os.WriteFile(file, raw, 0o600)
}

func get(c *http.Client, url, auth string) (response, error) {
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Authorization", auth)
	res, err := c.Do(req)
	if err != nil {
		return response{}, err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	h := res.Header.Clone()
	h.Del("Date") // net/http writes its own, in both servers
	return response{Status: res.StatusCode, Header: h, Body: body}, err
}

// sameAnswers checks that the baseline answers byte for byte as the real
// server does: status, headers but Date, body, and transfer encoding.
func sameAnswers(realURL, baseURL string, f *fixture) error {
	for _, p := range []string{f.listPath, f.getPath} {
		a, err1 := get(http.DefaultClient, realURL+p, f.auth)
		b, err2 := get(http.DefaultClient, baseURL+p, f.auth)
		if err := errors.Join(err1, err2); err != nil {
			return err
		}
		ha, _ := json.Marshal(a.Header)
		hb, _ := json.Marshal(b.Header)
		if a.Status != b.Status || !bytes.Equal(ha, hb) || !bytes.Equal(a.Body, b.Body) {
			return fmt.Errorf("GET %s: real %d %s (%d bytes), baseline %d %s (%d bytes)", p, a.Status, ha, len(a.Body), b.Status, hb, len(b.Body))
		}
	}
	return nil
}

// baseline serves the captured answers: the HTTP stack's own cost of the
// same bytes.
func baseline(args []string) error {
	fs := flag.NewFlagSet("baseline", flag.ContinueOnError)
	file := fs.String("responses", "", "the captured answers")
	addr := fs.String("addr", "127.0.0.1:0", "listen address")
	if err := fs.Parse(args); err != nil {
		return err
	}
	raw, err := os.ReadFile(*file)
	if err != nil {
		return err
	}
	var answers map[string]response
	if err := json.Unmarshal(raw, &answers); err != nil {
		return err
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/ready" {
			return
		}
		a, ok := answers[r.URL.RequestURI()]
		if !ok {
			http.NotFound(w, r)
			return
		}
		for k, v := range a.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(a.Status)
		w.Write(a.Body)
	})
	return (&http.Server{Addr: *addr, Handler: h}).ListenAndServe()
}

// result is one load run: requests done, the server's CPU seconds and the
// wall time.
type result struct {
	n    int64
	cpu  float64
	wall time.Duration
}

func (r result) perCPU() float64    { return float64(r.n) / r.cpu }
func (r result) perSecond() float64 { return float64(r.n) / r.wall.Seconds() }

func newClient(conns int) *http.Client {
	return &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns, DisableCompression: true}}
}

// throughput sends GET path to s from conns connections for d, after a
// short warm-up, and reads the server's CPU time around it.
func throughput(s *server, path, auth string, conns int, d time.Duration) (result, error) {
	c := newClient(conns)
	defer c.CloseIdleConnections()
	loop := func(d time.Duration) (int64, error) {
		var n atomic.Int64
		var firstErr error
		var once sync.Once
		var wg sync.WaitGroup
		stop := time.Now().Add(d)
		for range conns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				req, _ := http.NewRequest("GET", s.url+path, nil)
				req.Header.Set("Authorization", auth)
				for time.Now().Before(stop) {
					res, err := c.Do(req)
					if err == nil {
						_, err = io.Copy(io.Discard, res.Body)
						res.Body.Close()
						if err == nil && res.StatusCode != 200 {
							err = fmt.Errorf("status %d", res.StatusCode)
						}
					}
					if err != nil {
						once.Do(func() { firstErr = err })
						return
					}
					n.Add(1)
				}
			}()
		}
		wg.Wait()
		return n.Load(), firstErr
	}
	if _, err := loop(d / 4); err != nil {
		return result{}, err
	}
	cpu0, err := s.cpu()
	if err != nil {
		return result{}, err
	}
	t0 := time.Now()
	n, err := loop(d)
	wall := time.Since(t0)
	cpu1, err2 := s.cpu()
	if err := errors.Join(err, err2); err != nil {
		return result{}, err
	}
	return result{n: n, cpu: cpu1 - cpu0, wall: wall}, nil
}

// createCapacity is the creates per second 10 clients get back to back;
// it prints them per CPU-second of the server too.
func createCapacity(s *server, f *fixture, d time.Duration) (float64, error) {
	cpu0, err := s.cpu()
	if err != nil {
		return 0, err
	}
	c := newClient(10)
	defer c.CloseIdleConnections()
	var n atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	t0 := time.Now()
	stop := t0.Add(d)
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				if _, err := createOne(c, s.url, f, fmt.Sprintf("load/cap-%07d", f.created.Add(1))); err != nil {
					once.Do(func() { firstErr = err })
					return
				}
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	wall := time.Since(t0)
	cpu1, err := s.cpu()
	if err != nil {
		return 0, err
	}
	fmt.Printf("  creates: %.0f per CPU-second of the server (10 clients back to back)\n", float64(n.Load())/(cpu1-cpu0))
	return float64(n.Load()) / wall.Seconds(), firstErr
}

// creates runs n clients for d that together offer rate creates per
// second: each waits an exponentially distributed pause (mean n/rate)
// before each create, so both client counts offer the same load and only
// concurrency differs. It returns every create's latency.
func creates(s *server, f *fixture, n int, rate float64, d time.Duration) ([]time.Duration, error) {
	c := newClient(n)
	defer c.CloseIdleConnections()
	var mu sync.Mutex
	var lat []time.Duration
	var firstErr error
	var wg sync.WaitGroup
	stop := time.Now().Add(d)
	mean := float64(n) / rate
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// The first pause is uniform, so the clients do not start in step.
			time.Sleep(time.Duration(rand.Float64() * mean * float64(time.Second)))
			for time.Now().Before(stop) {
				t0 := time.Now()
				_, err := createOne(c, s.url, f, fmt.Sprintf("load/c%d-%07d", n, f.created.Add(1)))
				took := time.Since(t0)
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
				}
				lat = append(lat, took)
				mu.Unlock()
				if err != nil {
					return
				}
				time.Sleep(time.Duration(rand.ExpFloat64() * mean * float64(time.Second)))
			}
		}()
	}
	wg.Wait()
	if len(lat) == 0 && firstErr == nil {
		firstErr = errors.New("no create finished")
	}
	return lat, firstErr
}

func percentile(d []time.Duration, q float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.SortFunc(s, cmp.Compare)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// profile writes a CPU profile of s, taken through its profiling endpoint,
// while it serves GET path for d.
func profile(s *server, pprofAddr, path, auth string, conns int, d time.Duration, file string) error {
	errc := make(chan error, 1)
	go func() {
		_, err := throughput(s, path, auth, conns, d+d/2)
		errc <- err
	}()
	time.Sleep(d / 4)
	res, err := http.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", pprofAddr, max(1, int(d.Seconds()))))
	if err != nil {
		return err
	}
	defer res.Body.Close()
	prof, err := io.ReadAll(res.Body)
	if err == nil && res.StatusCode != 200 {
		err = fmt.Errorf("profile: %d %s", res.StatusCode, prof)
	}
	if err := errors.Join(err, <-errc); err != nil {
		return err
	}
	fmt.Println("  wrote", file)
	return os.WriteFile(file, prof, 0o644)
}
