// Package steps reads a build's steps from what the Kaniko executor prints:
// each Dockerfile instruction with the time it started, how long it took and
// how it ended (done, cached, skipped, failed), and for a failed step its
// exit code explained. It owns the one reading of the executor's log lines
// (logrus text: `time="..." level=info msg="RUN ..."`) and the matching of
// the instructions the executor announces to the Dockerfile's own (Plan),
// which gives them their line and stage.
//
// A Parser is an io.Writer: it reads a log as it is written, or a stored log
// fed to it in one go, in bounded memory, whatever the log holds. Times have
// the executor's resolution: whole seconds.
package steps

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/parser"
)

// Plan is a Dockerfile's instructions as the executor runs them: stage by
// stage, each stage starting with its FROM. Global ARGs before the first
// FROM are not steps.
type Plan struct {
	Stages []Stage
}

// Stage is one FROM and the instructions under it.
type Stage struct {
	// Name is the stage's "AS name", "" when it has none.
	Name string
	// Base is what the FROM names: an image reference (maybe with ARGs
	// unexpanded) or an earlier stage's name.
	Base         string
	Instructions []Instruction
}

// Instruction is one Dockerfile instruction.
type Instruction struct {
	// Keyword is the instruction's upper-case name: "RUN", "COPY", ...
	Keyword string
	// Text is the instruction as written, continuation lines joined: the
	// text the executor prints when it starts it.
	Text string
	// Line is the 1-based line the instruction starts on.
	Line int
	// Flags are its --name=value flags (COPY --from=builder: "from": "builder").
	Flags map[string]string
	// Args are its arguments after the flags.
	Args []string
}

// ParsePlan reads dockerfile with BuildKit's parser, the one the executor
// uses. A Dockerfile it cannot parse, or one that makes it panic, is an
// error; the caller then reads steps without a plan.
func ParsePlan(dockerfile string) (plan *Plan, err error) {
	defer func() {
		if p := recover(); p != nil {
			plan, err = nil, fmt.Errorf("the Dockerfile parser failed: %v", p)
		}
	}()
	res, err := parser.Parse(strings.NewReader(dockerfile))
	if err != nil {
		return nil, err
	}
	plan = &Plan{}
	for _, n := range res.AST.Children {
		kw := strings.ToUpper(n.Value)
		ins := Instruction{Keyword: kw, Text: strings.TrimSpace(n.Original), Line: n.StartLine, Flags: map[string]string{}}
		for _, f := range n.Flags {
			k, v, _ := strings.Cut(strings.TrimPrefix(f, "--"), "=")
			ins.Flags[strings.ToLower(k)] = v
		}
		for a := n.Next; a != nil; a = a.Next {
			ins.Args = append(ins.Args, a.Value)
		}
		if kw == "FROM" {
			st := Stage{}
			if len(ins.Args) > 0 {
				st.Base = ins.Args[0]
			}
			if len(ins.Args) == 3 && strings.EqualFold(ins.Args[1], "as") {
				st.Name = strings.ToLower(ins.Args[2])
			}
			st.Instructions = []Instruction{ins}
			plan.Stages = append(plan.Stages, st)
			continue
		}
		if len(plan.Stages) == 0 {
			continue // a global ARG (or a parser directive the parser kept)
		}
		last := &plan.Stages[len(plan.Stages)-1]
		last.Instructions = append(last.Instructions, ins)
	}
	if len(plan.Stages) == 0 {
		return nil, fmt.Errorf("the Dockerfile has no FROM")
	}
	return plan, nil
}

// stageOf returns the index of the stage that ref names (its name or its
// number), or -1 when ref names none: the executor then pulls ref as an
// image.
func (p *Plan) stageOf(ref string, before int) int {
	if p == nil {
		return -1
	}
	ref = strings.ToLower(ref)
	for i := 0; i < before && i < len(p.Stages); i++ {
		if p.Stages[i].Name != "" && p.Stages[i].Name == ref {
			return i
		}
	}
	if n, err := strconv.Atoi(ref); err == nil && n >= 0 && n < before && n < len(p.Stages) {
		return n
	}
	return -1
}

// size is the number of instructions in p.
func (p *Plan) size() int {
	if p == nil {
		return 0
	}
	n := 0
	for _, s := range p.Stages {
		n += len(s.Instructions)
	}
	return n
}
