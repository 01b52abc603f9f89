package coordinator

import (
	"fmt"

	"github.com/baton-dev/baton/protocol"
)

func (f *FSM) applyACLBootstrap(cmd *ACLBootstrapCmd) any {
	if f.state.ACL.Bootstrapped {
		return ErrACLBootstrapped
	}
	f.state.ACL.Bootstrapped = true
	return f.putToken(cmd.Token)
}

func (f *FSM) applyACLTokenCreate(cmd *ACLTokenCreateCmd) any {
	if _, ok := f.state.ACL.Tokens[cmd.Token.AccessorID]; ok {
		return fmt.Errorf("%w: %s", ErrTokenExists, cmd.Token.AccessorID)
	}
	return f.putToken(cmd.Token)
}

func (f *FSM) putToken(t protocol.ACLToken) any {
	if f.state.ACL.Tokens == nil {
		f.state.ACL.Tokens = map[string]*protocol.ACLToken{}
	}
	f.state.ACL.Tokens[t.AccessorID] = &t
	return t
}

func (f *FSM) applyACLTokenRevoke(cmd *ACLTokenRevokeCmd) any {
	if _, ok := f.state.ACL.Tokens[cmd.AccessorID]; !ok {
		return fmt.Errorf("%w: %q", ErrTokenNotFound, cmd.AccessorID)
	}
	delete(f.state.ACL.Tokens, cmd.AccessorID)
	return nil
}
