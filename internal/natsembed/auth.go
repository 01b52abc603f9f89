package natsembed

import (
	"crypto/subtle"
	"fmt"
	"strings"
	"sync/atomic"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/baton-dev/baton/internal/tlsutil"
	"github.com/baton-dev/baton/protocol"
)

// roleAuth authenticates every client connection of a secured server and
// gives it the permissions of its role (server.Authentication):
//
//   - the coordinator's own in-process connection, by a token only that
//     process knows: everything;
//   - a client with a verified certificate of the cluster's CA, by the
//     role and node in it (tlsutil.PeerRole): a coordinator everything,
//     an agent or LB only its own subjects (Permissions);
//   - anything else (no certificate, a CLI certificate, a node name that
//     is not a subject token) is refused.
type roleAuth struct {
	token []byte
	// refused counts refused connections; onRefuse, if set, hears why.
	refused  atomic.Int64
	onRefuse func(remote, reason string)
}

// Check implements server.Authentication.
func (a *roleAuth) Check(c server.ClientAuthentication) bool {
	if opts := c.GetOpts(); opts != nil && opts.Token != "" && len(a.token) > 0 &&
		subtle.ConstantTimeCompare([]byte(opts.Token), a.token) == 1 {
		c.RegisterUser(&server.User{Username: "coordinator (in process)"})
		return true
	}
	role, node, ok := tlsutil.PeerRole(c.GetTLSConnectionState())
	if !ok {
		return a.refuse(c, "no verified certificate of the cluster's CA with a baton role")
	}
	perms, err := Permissions(role, node)
	if err != nil {
		return a.refuse(c, err.Error())
	}
	c.RegisterUser(&server.User{Username: role + "/" + node, Permissions: perms})
	return true
}

func (a *roleAuth) refuse(c server.ClientAuthentication, reason string) bool {
	a.refused.Add(1)
	if a.onRefuse != nil {
		remote := "unknown"
		if addr := c.RemoteAddress(); addr != nil {
			remote = addr.String()
		}
		a.onRefuse(remote, reason)
	}
	return false
}

// Permissions returns what a client holding a certificate of role and node
// may publish and subscribe to (nil: everything, for a coordinator):
//
//	agent X: publish its status, its spec and bundle requests and cluster
//	         index requests; subscribe to its desired set and its own
//	         replies
//	LB Y:    publish its acks and stats, route sync and cluster index
//	         requests; subscribe to route tables and its own replies
//
// Only coordinators publish route tables and desired sets. A CLI
// certificate, or an agent or LB whose node is not a valid id, gets an
// error.
func Permissions(role, node string) (*server.Permissions, error) {
	switch role {
	case tlsutil.RoleCoordinator:
		return nil, nil
	case tlsutil.RoleAgent:
		if err := protocol.ValidateAgentID(node); err != nil {
			return nil, fmt.Errorf("agent certificate: %v", err)
		}
		return &server.Permissions{
			Publish: &server.SubjectPermission{Allow: []string{
				protocol.AgentStatusSubject(node),
				protocol.SpecGetSubject(node),
				protocol.BundleGetSubject(node),
				protocol.SubjectClusterIndex,
			}},
			Subscribe: &server.SubjectPermission{Allow: []string{
				protocol.AgentDesiredSubject(node),
				protocol.InboxPrefix(role, node) + ".>",
			}},
		}, nil
	case tlsutil.RoleLB:
		if err := protocol.ValidateLBID(node); err != nil {
			return nil, fmt.Errorf("LB certificate: %v", err)
		}
		return &server.Permissions{
			Publish: &server.SubjectPermission{Allow: []string{
				protocol.LBAckSubject(node),
				protocol.LBStatsSubject(node),
				protocol.SubjectRoutesSync,
				protocol.SubjectClusterIndex,
			}},
			Subscribe: &server.SubjectPermission{Allow: []string{
				protocol.SubjectRoutesAll,
				protocol.InboxPrefix(role, node) + ".>",
			}},
		}, nil
	case "":
		return nil, fmt.Errorf("certificate has no baton role")
	default:
		return nil, fmt.Errorf("a %s certificate may not connect to NATS (only coordinators, agents and LBs)", strings.ToUpper(role[:1])+role[1:])
	}
}
