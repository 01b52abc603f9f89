package coordinator

import (
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/baton-dev/baton/protocol"
)

// defaultPortRange is where replica ports are picked on an agent that
// reports no range of its own: below the LB service ports (30001 up) and
// below Linux's ephemeral range (32768 up), so that outgoing connections
// cannot take a port between the choice and the replica binding it.
var defaultPortRange = protocol.PortRange{Min: 10000, Max: 29999}

// placer decides which agent a replica goes to and which port it listens
// on. It tracks what each agent has left, and which ports are taken in
// each port space, as replicas are placed during one reconcile pass.
//
// Ports are decided here, in the one place that knows every replica of
// every agent: several agents on one machine (baton dev, or containers
// sharing a network namespace) share one port space, and an agent that
// picked ports itself could hand out a port another agent on the machine
// had just handed out too.
//
// Within a pass an agent only ever loses room (placements add, nothing is
// freed), so the placer remembers, per kind of request, how far down the
// size-ordered agent list every agent is known not to fit, and which
// requests fit nowhere: placing the 10,000th replica on a fleet of 1,000
// agents does not test the 999 full ones again.
type placer struct {
	// st is the state counted; used is nil until init has counted it.
	st     *State
	avoid  []spacePort       // ports to mark taken at init
	agents []*protocol.Agent // alive agents, smallest first (see smaller)
	used   map[string]*usage
	// ports are the ports replicas listen on (or have been given) per
	// port space (see portSpace).
	ports map[string]map[int]bool
	// rand picks where a port search starts; tests seed it.
	rand *rand.Rand
	// cursors: per request kind, the position in agents before which no
	// agent fits it any more this pass.
	cursors map[cursorKey]int
	// noFit remembers the reason for requests (by Resources.String) that
	// fit on no agent at all this pass.
	noFit map[string]string
}

// cursorKey names one kind of request for the placer's cursors.
type cursorKey struct {
	res    string // Resources.String()
	option int    // accelerator option
	tier   int    // which agents are allowed (see place)
	port   int    // the port wanted (0: any)
}

type usage struct {
	cpus, memory float64
	gpus         map[string]bool // UUIDs in use
	replicas     int
}

// portSpace names the set of ports an agent's replicas share: its
// network namespace when the agent reports one, else its host address.
func portSpace(a *protocol.Agent) string {
	if a.NetNS != "" {
		return "netns:" + a.NetNS
	}
	return "host:" + a.Host
}

// newPlacer counts what every replica that holds resources uses. A
// SHUTTING_DOWN replica still holds its share (and its port) until it is
// gone.
func newPlacer(st *State) *placer {
	p := newLazyPlacer(st)
	p.init()
	return p
}

// newLazyPlacer is newPlacer that counts only when first asked to place:
// a pass over a fleet where nothing needs placing never counts.
func newLazyPlacer(st *State) *placer {
	return &placer{st: st}
}

func (p *placer) init() {
	if p.used != nil {
		return
	}
	st := p.st
	p.used = make(map[string]*usage, len(st.Agents))
	p.ports = map[string]map[int]bool{}
	p.rand = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	p.cursors = map[cursorKey]int{}
	p.noFit = map[string]string{}
	for _, id := range st.AgentIDs() {
		a := st.Agents[id]
		p.used[id] = &usage{gpus: map[string]bool{}}
		if a.Alive {
			p.agents = append(p.agents, a)
		}
	}
	sort.SliceStable(p.agents, func(i, j int) bool { return smaller(p.agents[i], p.agents[j]) })
	for _, r := range st.Replicas {
		if r.AgentID == "" || r.Status.IsFailed() {
			continue
		}
		p.take(r.AgentID, r.Resources)
		if a := st.Agents[r.AgentID]; a != nil {
			space := portSpace(a)
			p.takePort(space, r.Resources.Port)
			p.takePort(space, endpointPort(r.Endpoint))
		}
	}
	for _, sp := range p.avoid {
		p.takePort(sp.space, sp.port)
	}
}

// avoidPort marks a port taken in a port space (one found busy).
func (p *placer) avoidPort(space string, port int) {
	if p.used == nil {
		p.avoid = append(p.avoid, spacePort{space, port})
		return
	}
	p.takePort(space, port)
}

type spacePort struct {
	space string
	port  int
}

// endpointPort is the port of a host:port endpoint, 0 if there is none.
func endpointPort(endpoint string) int {
	_, port, err := net.SplitHostPort(endpoint)
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(port)
	return n
}

func (p *placer) takePort(space string, port int) {
	if port <= 0 {
		return
	}
	if p.ports[space] == nil {
		p.ports[space] = map[int]bool{}
	}
	p.ports[space][port] = true
}

func (p *placer) portTaken(a *protocol.Agent, port int) bool {
	return p.ports[portSpace(a)][port]
}

func (p *placer) take(agentID string, a protocol.Allocation) {
	u := p.used[agentID]
	if u == nil {
		u = &usage{gpus: map[string]bool{}}
		p.used[agentID] = u
	}
	u.cpus += a.CPUs
	u.memory += a.MemoryGB
	u.replicas++
	for _, g := range a.GPUUUIDs {
		u.gpus[g] = true
	}
}

// freePort picks a port of a's range that no replica holds in a's port
// space, starting at a random place so that a port just given up is not
// handed out again at once; 0 when the range is full.
func (p *placer) freePort(a *protocol.Agent) int {
	r := a.PortRange
	if r.Min <= 0 || r.Max < r.Min {
		r = defaultPortRange
	}
	n := r.Max - r.Min + 1
	start := p.rand.IntN(n)
	taken := p.ports[portSpace(a)]
	for i := 0; i < n; i++ {
		port := r.Min + (start+i)%n
		if !taken[port] {
			return port
		}
	}
	return 0
}

// candidate is one way to place a replica.
type candidate struct {
	agent *protocol.Agent
	alloc protocol.Allocation
}

// endpoint is where the placed replica will listen.
func (c candidate) endpoint() string {
	return net.JoinHostPort(c.agent.Host, strconv.Itoa(c.alloc.Port))
}

// place picks the smallest agent that fits res, reserves its share and
// gives the replica a port: want (the task's port) where it is free in the
// agent's port space, else a free one from the agent's port range. It
// prefers, in this order, agents where want is free (want 0: any) and
// agents not in avoid (where the same version failed before). An agent
// without want free is still used when nothing else fits, with another
// port. On no fit it returns a reason saying what is missing.
func (p *placer) place(res protocol.Resources, want int, avoid map[string]bool) (candidate, string, bool) {
	p.init()
	kind := res.String()
	if reason, ok := p.noFit[kind]; ok {
		return candidate{}, reason, false
	}
	portFree := func(a *protocol.Agent) bool { return want <= 0 || !p.portTaken(a, want) }
	tiers := []func(*protocol.Agent) bool{
		func(a *protocol.Agent) bool { return portFree(a) && !avoid[a.ID] },
		portFree,
		func(a *protocol.Agent) bool { return !avoid[a.ID] },
		func(*protocol.Agent) bool { return true },
	}
	for tier, allowed := range tiers {
		// Tiers that read avoid keep no cursor: avoid differs per version.
		keep := len(avoid) == 0 || tier == 1 || tier == 3
		if c, ok := p.pick(res, allowed, cursorKey{res: kind, tier: tier, port: want}, keep); ok {
			c.alloc.Port = want
			if want <= 0 || p.portTaken(c.agent, want) {
				c.alloc.Port = p.freePort(c.agent)
			}
			p.takePort(portSpace(c.agent), c.alloc.Port)
			return c, "", true
		}
	}
	reason := p.noFitReason(res)
	p.noFit[kind] = reason
	return candidate{}, reason, false
}

// repick gives a placed replica on agent a new port other than busy (held
// on the host by a process baton does not run), or 0 when none is free.
// The busy port stays marked taken for the rest of the pass.
func (p *placer) repick(a *protocol.Agent, want, busy int) int {
	p.init()
	p.takePort(portSpace(a), busy)
	port := want
	if want <= 0 || p.portTaken(a, want) {
		port = p.freePort(a)
	}
	p.takePort(portSpace(a), port)
	return port
}

// pick reserves the best fit among the allowed agents: for each
// accelerator option the first agent in size order that fits, and of
// those the smallest (or, for an ordered list, the first option's). With
// keep, agents found not to fit are remembered under key so that the next
// request of the same kind starts after them.
func (p *placer) pick(res protocol.Resources, allowed func(*protocol.Agent) bool, key cursorKey, keep bool) (candidate, bool) {
	options := res.Accelerators.Options
	if len(options) == 0 {
		options = []protocol.AcceleratorOption{{}}
	}
	best, bestPos := candidate{}, -1
	for i, opt := range options {
		key.option = i
		start := 0
		if keep {
			start = p.cursors[key]
		}
		pos := start
		for ; pos < len(p.agents); pos++ {
			if bestPos >= 0 && pos >= bestPos {
				break // an earlier option already fits a smaller agent
			}
			a := p.agents[pos]
			if !allowed(a) {
				continue
			}
			if c, ok := p.fit(a, res, opt); ok {
				best, bestPos = c, pos
				break
			}
		}
		if keep {
			p.cursors[key] = pos // every allowed agent before pos is too full
		}
		if bestPos >= 0 && res.Accelerators.Ordered {
			break // a list is a preference order: the first option that fits wins
		}
	}
	if bestPos < 0 {
		return candidate{}, false
	}
	p.take(best.agent.ID, best.alloc)
	return best, true
}

// fitsOn reports whether res fits on the agent now, without reserving.
func (p *placer) fitsOn(agentID string, res protocol.Resources) bool {
	p.init()
	options := res.Accelerators.Options
	if len(options) == 0 {
		options = []protocol.AcceleratorOption{{}}
	}
	for _, a := range p.agents {
		if a.ID != agentID {
			continue
		}
		for _, opt := range options {
			if _, ok := p.fit(a, res, opt); ok {
				return true
			}
		}
	}
	return false
}

// fitsOnFreeing reports whether res would fit on the agent once the
// allocation freed is given back (a replica retired to make room).
func (p *placer) fitsOnFreeing(agentID string, res protocol.Resources, freed protocol.Allocation) bool {
	p.init()
	u := p.used[agentID]
	if u == nil {
		return false
	}
	saved := *u
	u.cpus -= freed.CPUs
	u.memory -= freed.MemoryGB
	u.replicas--
	u.gpus = maps.Clone(u.gpus)
	for _, g := range freed.GPUUUIDs {
		delete(u.gpus, g)
	}
	defer func() { *u = saved }()
	return p.fitsOn(agentID, res)
}

// smaller orders agents by size (GPUs, then CPUs, then memory, then id) so
// small replicas do not take the big machines that big replicas need.
func smaller(a, b *protocol.Agent) bool {
	if len(a.Capacity.GPUs) != len(b.Capacity.GPUs) {
		return len(a.Capacity.GPUs) < len(b.Capacity.GPUs)
	}
	if a.Capacity.CPUs != b.Capacity.CPUs {
		return a.Capacity.CPUs < b.Capacity.CPUs
	}
	if a.Capacity.MemoryGB != b.Capacity.MemoryGB {
		return a.Capacity.MemoryGB < b.Capacity.MemoryGB
	}
	return a.ID < b.ID
}

// fit checks one agent against the request. A replica reserves what it
// asks for on one agent: `cpus: 4` reserves exactly 4, and so does `4+`
// (at least 4: the replica may use more when the machine is idle); either
// way the agent must have 4 free. Memory works the same way.
func (p *placer) fit(a *protocol.Agent, res protocol.Resources, opt protocol.AcceleratorOption) (candidate, bool) {
	u := p.used[a.ID]
	if u.replicas >= protocol.MaxReplicasPerAgent || p.freePortCount(a) == 0 {
		return candidate{}, false
	}
	if !quantityFits(res.CPUs, a.Capacity.CPUs-u.cpus) {
		return candidate{}, false
	}
	if !quantityFits(res.Memory, a.Capacity.MemoryGB-u.memory) {
		return candidate{}, false
	}
	alloc := protocol.Allocation{CPUs: res.CPUs.Value, MemoryGB: res.Memory.Value}
	if opt.Count > 0 {
		var free []string
		for _, g := range a.Capacity.GPUs {
			if g.Healthy && !u.gpus[g.UUID] && gpuMatches(g.Name, opt.Name) {
				free = append(free, g.UUID)
			}
		}
		if len(free) < opt.Count {
			return candidate{}, false
		}
		alloc.GPUName = opt.Name
		alloc.GPUUUIDs = free[:opt.Count]
	}
	return candidate{agent: a, alloc: alloc}, true
}

// freePortCount is 1 when a's port range has a free port, else 0 (a
// cheap check: the range is large and rarely close to full).
func (p *placer) freePortCount(a *protocol.Agent) int {
	r := a.PortRange
	if r.Min <= 0 || r.Max < r.Min {
		r = defaultPortRange
	}
	if len(p.ports[portSpace(a)]) < r.Max-r.Min+1 || p.freePort(a) != 0 {
		return 1
	}
	return 0
}

func quantityFits(q protocol.Quantity, free float64) bool {
	return !q.IsSet() || free >= q.Value-1e-9
}

// gpuMatches compares a requested accelerator name (A100) with a device
// name as NVML reports it (NVIDIA A100-SXM4-40GB): equal ignoring case, or
// equal to one of the device name's words.
func gpuMatches(device, want string) bool {
	if strings.EqualFold(device, want) {
		return true
	}
	for _, w := range strings.FieldsFunc(device, func(r rune) bool { return r == ' ' || r == '-' || r == '_' }) {
		if strings.EqualFold(w, want) {
			return true
		}
	}
	return false
}

// closestShown is how many agents a no-fit reason describes.
const closestShown = 3

// noFitReason explains why nothing fits, for the PENDING replica's status.
// It stays short on any fleet: what was asked, how many agents are alive,
// and the closest few (fewest unmet needs, then most room). The part
// before " (closest" is its gist: a reason whose gist has not changed is
// not written to Raft again (see sameReasonGist).
func (p *placer) noFitReason(res protocol.Resources) string {
	want := res.String()
	if len(p.agents) == 0 {
		return fmt.Sprintf("no agent fits %s: no agents are alive", want)
	}
	type option struct {
		a                *protocol.Agent
		unmet            int
		cpus, mem, match float64
		full             bool
	}
	opts := make([]option, 0, len(p.agents))
	for _, a := range p.agents {
		u := p.used[a.ID]
		o := option{a: a, cpus: a.Capacity.CPUs - u.cpus, mem: a.Capacity.MemoryGB - u.memory}
		if u.replicas >= protocol.MaxReplicasPerAgent {
			o.full = true
			o.unmet = 4
		}
		if !quantityFits(res.CPUs, o.cpus) {
			o.unmet++
		}
		if !quantityFits(res.Memory, o.mem) {
			o.unmet++
		}
		if len(res.Accelerators.Options) > 0 {
			bestShort := math.MaxInt
			for _, opt := range res.Accelerators.Options {
				free := 0
				for _, g := range a.Capacity.GPUs {
					if g.Healthy && !u.gpus[g.UUID] && gpuMatches(g.Name, opt.Name) {
						free++
					}
				}
				bestShort = min(bestShort, max(0, opt.Count-free))
				o.match = max(o.match, float64(free))
			}
			if bestShort > 0 {
				o.unmet++
			}
		}
		opts = append(opts, o)
	}
	sort.Slice(opts, func(i, j int) bool {
		x, y := opts[i], opts[j]
		switch {
		case x.unmet != y.unmet:
			return x.unmet < y.unmet
		case x.match != y.match:
			return x.match > y.match
		case x.cpus != y.cpus:
			return x.cpus > y.cpus
		case x.mem != y.mem:
			return x.mem > y.mem
		}
		return x.a.ID < y.a.ID
	})
	var shown []string
	for _, o := range opts[:min(closestShown, len(opts))] {
		a, u := o.a, p.used[o.a.ID]
		if o.full {
			shown = append(shown, fmt.Sprintf("%s runs %d replicas, the most one agent may", a.ID, u.replicas))
			continue
		}
		desc := fmt.Sprintf("%s %s/%s cpus free", a.ID, num(o.cpus), num(a.Capacity.CPUs))
		if res.Memory.IsSet() {
			desc += fmt.Sprintf(", %s/%s GB free", num(o.mem), num(a.Capacity.MemoryGB))
		}
		if len(a.Capacity.GPUs) > 0 {
			names := map[string]int{}
			for _, g := range a.Capacity.GPUs {
				if g.Healthy && !u.gpus[g.UUID] {
					names[g.Name]++
				}
			}
			for _, n := range slices.Sorted(maps.Keys(names)) {
				desc += fmt.Sprintf(", %s:%d free", n, names[n])
			}
		}
		shown = append(shown, desc)
	}
	agents := "agents"
	if len(p.agents) == 1 {
		agents = "agent"
	}
	closest := "closest"
	if len(opts) > len(shown) {
		closest = fmt.Sprintf("closest %d of %d", len(shown), len(opts))
	}
	return fmt.Sprintf("no agent fits %s among %d alive %s (%s: %s)", want, len(p.agents), agents, closest, strings.Join(shown, "; "))
}

// sameReasonGist reports whether two reasons say the same thing in other
// words: for a no-fit reason, the same request and number of alive
// agents, whatever the closest agents have free now. Rewording alone is
// not worth a Raft write.
func sameReasonGist(a, b string) bool {
	gist := func(s string) string {
		if i := strings.Index(s, " (closest"); i >= 0 {
			return s[:i]
		}
		return s
	}
	return gist(a) == gist(b)
}

func num(f float64) string {
	if f == float64(int64(f)) {
		return fmt.Sprintf("%d", int64(f))
	}
	return fmt.Sprintf("%.1f", f)
}
