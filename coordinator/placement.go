package coordinator

import (
	"fmt"
	"math/rand/v2"
	"net"
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
type placer struct {
	agents []*protocol.Agent // alive agents, sorted by id
	used   map[string]*usage
	// ports are the ports replicas listen on (or have been given) per
	// port space (see portSpace).
	ports map[string]map[int]bool
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
	p := &placer{used: map[string]*usage{}, ports: map[string]map[int]bool{}}
	for _, id := range st.AgentIDs() {
		a := st.Agents[id]
		p.used[id] = &usage{gpus: map[string]bool{}}
		if a.Alive {
			p.agents = append(p.agents, a)
		}
	}
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
	return p
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
	start := rand.IntN(n)
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
	portFree := func(a *protocol.Agent) bool { return want <= 0 || !p.portTaken(a, want) }
	tiers := []func(*protocol.Agent) bool{
		func(a *protocol.Agent) bool { return portFree(a) && !avoid[a.ID] },
		portFree,
		func(a *protocol.Agent) bool { return !avoid[a.ID] },
		func(*protocol.Agent) bool { return true },
	}
	for _, allowed := range tiers {
		if c, ok := p.pick(res, allowed); ok {
			c.alloc.Port = want
			if want <= 0 || p.portTaken(c.agent, want) {
				c.alloc.Port = p.freePort(c.agent)
			}
			p.takePort(portSpace(c.agent), c.alloc.Port)
			return c, "", true
		}
	}
	return candidate{}, p.noFitReason(res), false
}

// repick gives a placed replica on agent a new port other than busy (held
// on the host by a process baton does not run), or 0 when none is free.
// The busy port stays marked taken for the rest of the pass.
func (p *placer) repick(a *protocol.Agent, want, busy int) int {
	p.takePort(portSpace(a), busy)
	port := want
	if want <= 0 || p.portTaken(a, want) {
		port = p.freePort(a)
	}
	p.takePort(portSpace(a), port)
	return port
}

// pick reserves the best fit among the allowed agents.
func (p *placer) pick(res protocol.Resources, allowed func(*protocol.Agent) bool) (candidate, bool) {
	options := res.Accelerators.Options
	if len(options) == 0 {
		options = []protocol.AcceleratorOption{{}}
	}
	var best *candidate
	for _, opt := range options {
		for _, a := range p.agents {
			if !allowed(a) {
				continue
			}
			c, ok := p.fit(a, res, opt)
			if !ok {
				continue
			}
			if best == nil || smaller(c.agent, best.agent) {
				cc := c
				best = &cc
			}
		}
		if best != nil && res.Accelerators.Ordered {
			break // a list is a preference order: the first option that fits wins
		}
	}
	if best == nil {
		return candidate{}, false
	}
	p.take(best.agent.ID, best.alloc)
	return *best, true
}

// fitsOn reports whether res fits on the agent now, without reserving.
func (p *placer) fitsOn(agentID string, res protocol.Resources) bool {
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

// noFitReason explains why nothing fits, for the PENDING replica's status.
func (p *placer) noFitReason(res protocol.Resources) string {
	want := res.String()
	if len(p.agents) == 0 {
		return fmt.Sprintf("no agent fits %s: no agents are alive", want)
	}
	var have []string
	for _, a := range p.agents {
		u := p.used[a.ID]
		if u.replicas >= protocol.MaxReplicasPerAgent {
			have = append(have, fmt.Sprintf("%s runs %d replicas, the most one agent may", a.ID, u.replicas))
			continue
		}
		desc := fmt.Sprintf("%s %s/%s cpus free", a.ID, num(a.Capacity.CPUs-u.cpus), num(a.Capacity.CPUs))
		if res.Memory.IsSet() {
			desc += fmt.Sprintf(", %s/%s GB free", num(a.Capacity.MemoryGB-u.memory), num(a.Capacity.MemoryGB))
		}
		if len(a.Capacity.GPUs) > 0 {
			names := map[string]int{}
			for _, g := range a.Capacity.GPUs {
				if g.Healthy && !u.gpus[g.UUID] {
					names[g.Name]++
				}
			}
			keys := make([]string, 0, len(names))
			for n := range names {
				keys = append(keys, n)
			}
			sort.Strings(keys)
			for _, n := range keys {
				desc += fmt.Sprintf(", %s:%d free", n, names[n])
			}
		}
		have = append(have, desc)
	}
	return fmt.Sprintf("no agent fits %s (%s)", want, strings.Join(have, "; "))
}

func num(f float64) string {
	if f == float64(int64(f)) {
		return fmt.Sprintf("%d", int64(f))
	}
	return fmt.Sprintf("%.1f", f)
}
