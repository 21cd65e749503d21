package steps

import (
	"bytes"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Limits that keep a Parser's memory bounded whatever a log holds (a RUN
// can print lines that look like the executor's own).
const (
	maxLine       = 64 << 10 // longer lines are not the executor's: skipped
	maxText       = 4 << 10  // an instruction's text is kept up to this
	maxAnnounced  = 2000     // instructions kept when there is no plan
	maxErrorBytes = 2 << 10
)

// Parser reads an executor's log, written to it in pieces of any size, and
// keeps what the steps are made of. It is safe for concurrent use. Its
// zero value is not usable: call NewParser.
type Parser struct {
	mu      sync.Mutex
	plan    *Plan
	partial []byte
	long    bool // the current line is past maxLine: skip to its end

	first    time.Time // the first timestamp
	last     time.Time // the latest timestamp
	stages   []stageStart
	started  []announced
	cached   map[string]bool // texts the executor took from the cache, this stage
	pulled   string          // the last image the executor began to retrieve
	push     *pushSeen
	errLine  string // the executor's last error
	exitCode int    // from the error, -1 when it names none
	dropped  bool   // announcements beyond maxAnnounced
	// With a plan: the current stage's instruction texts and their
	// positions, and the position after the last one announced.
	texts  map[string][]int
	cursor int
}

type stageStart struct {
	index int
	base  string
	at    time.Time
}

type announced struct {
	stage  int // index into Parser.stages, -1 before any stage
	pos    int // position in the plan's stage; -1 without a plan
	text   string
	at     time.Time
	cached bool
}

type pushSeen struct {
	to     string
	at     time.Time
	pushed *time.Time
}

// NewParser returns a parser that matches the executor's instructions to
// plan's; plan may be nil (no Dockerfile known): the steps are then the
// instructions the log announces, without lines.
func NewParser(plan *Plan) *Parser {
	return &Parser{plan: plan, exitCode: -1, cached: map[string]bool{}}
}

// Parse reads a whole log.
func Parse(log []byte, plan *Plan) *Parser {
	p := NewParser(plan)
	p.Write(log)
	p.Flush()
	return p
}

// Write implements io.Writer; it never fails.
func (p *Parser) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(b)
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			p.keep(b)
			break
		}
		p.keep(b[:i])
		if !p.long {
			p.line(string(p.partial))
		}
		p.partial, p.long = p.partial[:0], false
		b = b[i+1:]
	}
	return n, nil
}

// Flush reads a last line that has no newline.
func (p *Parser) Flush() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.partial) > 0 && !p.long {
		p.line(string(p.partial))
	}
	p.partial, p.long = p.partial[:0], false
}

func (p *Parser) keep(b []byte) {
	if p.long {
		return
	}
	if len(p.partial)+len(b) > maxLine {
		p.long = true
		p.partial = p.partial[:0]
		return
	}
	p.partial = append(p.partial, b...)
}

// keywords are the instructions the executor announces by their text.
var keywords = map[string]bool{
	"RUN": true, "COPY": true, "ADD": true, "WORKDIR": true, "USER": true, "ENV": true, "ARG": true,
	"LABEL": true, "CMD": true, "ENTRYPOINT": true, "EXPOSE": true, "VOLUME": true, "SHELL": true,
	"STOPSIGNAL": true, "HEALTHCHECK": true, "ONBUILD": true,
}

var (
	stageRE  = regexp.MustCompile(`^Building stage '(.*)' \[idx: '(\d+)', base-idx: '-?\d+'\]$`)
	exitRE   = regexp.MustCompile(`exit (?:status|code) (\d{1,3})\b`)
	colourRE = regexp.MustCompile(`^(INFO|WARN|ERRO|FATA|DEBU|TRAC)\[(\d+)\] ?(.*)$`)
)

// line reads one line of the log.
func (p *Parser) line(l string) {
	l = strings.TrimRight(l, "\r")
	at, level, msg, ok := logrusLine(l)
	if !ok && len(l) > 5 && l[4] == '[' {
		if m := colourRE.FindStringSubmatch(l); m != nil {
			// --log-format=color: seconds since the executor started.
			secs, _ := strconv.Atoi(m[2])
			at, level, msg, ok = time.Unix(int64(secs), 0).UTC(), strings.ToLower(m[1]), strings.TrimSpace(m[3]), true
		}
	}
	if !ok {
		// The executor's final error is printed without a prefix.
		if t := strings.TrimSpace(l); strings.HasPrefix(t, "error building image:") || strings.HasPrefix(t, "error pushing image:") ||
			strings.HasPrefix(t, "error checking push permissions") {
			p.setError(t)
		}
		return
	}
	if !at.IsZero() {
		if p.first.IsZero() {
			p.first = at
		}
		if at.After(p.last) {
			p.last = at
		}
	}
	if level == "error" || level == "erro" || level == "fatal" || level == "fata" {
		p.setError(msg)
		return
	}
	switch {
	case strings.HasPrefix(msg, "Building stage '"):
		if m := stageRE.FindStringSubmatch(msg); m != nil && len(p.stages) < maxAnnounced {
			idx, _ := strconv.Atoi(m[2])
			p.stages = append(p.stages, stageStart{index: idx, base: clip(m[1]), at: at})
			clear(p.cached)
			p.texts, p.cursor = nil, 1
		}
	case strings.HasPrefix(msg, "Using caching version of cmd: "):
		if len(p.cached) < maxAnnounced {
			p.cached[clip(strings.TrimPrefix(msg, "Using caching version of cmd: "))] = true
		}
	case msg == "Found cached layer, extracting to filesystem":
		if n := len(p.started); n > 0 {
			p.started[n-1].cached = true
		}
	case strings.HasPrefix(msg, "Retrieving image ") && strings.Contains(msg, " from registry "):
		p.pulled = clip(strings.TrimPrefix(msg[:strings.LastIndex(msg, " from registry ")], "Retrieving image "))
	case strings.HasPrefix(msg, "Pushing image to "):
		to := clip(strings.TrimPrefix(msg, "Pushing image to "))
		if !cacheRef(to) && p.push == nil {
			p.push = &pushSeen{to: to, at: at}
		}
	case strings.HasPrefix(msg, "Pushed "):
		if p.push != nil && p.push.pushed == nil {
			p.push.pushed = &at
		}
	default:
		kw, _, _ := strings.Cut(msg, " ")
		if !keywords[kw] || p.push != nil {
			return
		}
		p.announce(msg, at)
	}
}

// announce records that the executor began instruction text.
func (p *Parser) announce(text string, at time.Time) {
	text = clip(text)
	stage := len(p.stages) - 1
	pos := -1
	if p.plan != nil {
		// Only what the plan holds is an instruction: a RUN's output that
		// looks like an announcement is not, unless it is the very text of
		// one still to come in this stage.
		if pos = p.nextAt(stage, text); pos < 0 {
			return
		}
		p.cursor = pos + 1
	} else if len(p.started) >= maxAnnounced {
		p.dropped = true
		return
	}
	p.started = append(p.started, announced{stage: stage, pos: pos, text: text, at: at, cached: p.cached[text]})
}

// nextAt is the position in the plan's stage that stages[stage] started of
// the first instruction at or after the cursor whose text is text; -1 when
// there is none.
func (p *Parser) nextAt(stage int, text string) int {
	if stage < 0 {
		return -1
	}
	idx := p.stages[stage].index
	if idx < 0 || idx >= len(p.plan.Stages) {
		return -1
	}
	if p.texts == nil {
		p.texts = map[string][]int{}
		for i, in := range p.plan.Stages[idx].Instructions {
			if i > 0 {
				t := clip(in.Text)
				p.texts[t] = append(p.texts[t], i)
			}
		}
	}
	at := p.texts[text]
	if i := sort.SearchInts(at, p.cursor); i < len(at) {
		return at[i]
	}
	return -1
}

func (p *Parser) setError(msg string) {
	p.errLine = clipTo(msg, maxErrorBytes)
	p.exitCode = -1
	if m := exitRE.FindStringSubmatch(msg); m != nil && strings.Contains(msg, "failed to execute command") {
		p.exitCode, _ = strconv.Atoi(m[1])
	}
}

// logrusLine splits a logrus text line: time="RFC3339" level=L msg=M.
func logrusLine(l string) (at time.Time, level, msg string, ok bool) {
	rest, found := strings.CutPrefix(l, "time=")
	if !found {
		return at, "", "", false
	}
	var ts string
	if ts, rest, ok = value(rest); !ok {
		return at, "", "", false
	}
	at, _ = time.Parse(time.RFC3339, ts) // zero when the time is not one
	if rest, found = strings.CutPrefix(rest, " level="); !found {
		return at, "", "", false
	}
	if level, rest, ok = value(rest); !ok {
		return at, "", "", false
	}
	if rest, found = strings.CutPrefix(rest, " msg="); !found {
		return at, "", "", false
	}
	msg, _, ok = value(rest)
	return at, level, msg, ok
}

// value reads a logrus value: a Go-quoted string, or text up to a space.
func value(s string) (v, rest string, ok bool) {
	if strings.HasPrefix(s, `"`) {
		q, err := strconv.QuotedPrefix(s)
		if err != nil {
			return "", "", false
		}
		v, err = strconv.Unquote(q)
		return v, s[len(q):], err == nil
	}
	v, rest, _ = strings.Cut(s, " ")
	if rest != "" || strings.HasSuffix(s, " ") {
		rest = " " + rest
	}
	return v, rest, true
}

func clip(s string) string { return clipTo(s, maxText) }

func clipTo(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !isRuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

func isRuneStart(b byte) bool { return b&0xC0 != 0x80 }

// cacheRef says whether ref is one of the layer cache's images: the
// executor tags those with their cache key, a SHA-256 in hex. (The line
// that announces a cache push, "Pushing layer ... to cache now", is not
// enough: the push runs beside the next RUN, whose output may cut it.)
func cacheRef(ref string) bool {
	i := strings.LastIndexByte(ref, ':')
	if i < 0 || strings.Contains(ref[i:], "/") {
		return false
	}
	tag := ref[i+1:]
	if len(tag) != 64 {
		return false
	}
	for _, c := range tag {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}
